"""Minibatches are a pure function of (seed, step); the device path's rows are the host path's batches."""

import itertools

import numpy as np

from improve_nas.adanet.runtime.batches import train_batches, train_rows

N = 10
IMAGES = np.arange(N)[:, None] * np.ones((1, 3), dtype=np.int64)  # row i holds i
LABELS = np.arange(N) % 3


def first_batches(count, **kwargs):
    return list(itertools.islice(train_batches(IMAGES, LABELS, batch_size=4, **kwargs), count))


def test_each_epoch_visits_every_example_once():
    rows = np.concatenate([images[:, 0] for images, _ in first_batches(5, seed=1)])  # 20 rows = 2 epochs
    assert sorted(rows[:N]) == list(range(N)) and sorted(rows[N:]) == list(range(N))
    assert list(rows[:N]) != list(rows[N:])  # a fresh permutation per epoch


def test_labels_follow_their_images():
    for images, labels in first_batches(5, seed=2):
        np.testing.assert_array_equal(labels, images[:, 0] % 3)


def test_resuming_at_step_k_continues_the_same_sequence():
    whole = first_batches(6, seed=3)
    resumed = list(itertools.islice(train_batches(IMAGES, LABELS, batch_size=4, seed=3, start_step=4), 2))
    for (got, _), (want, _) in zip(resumed, whole[4:]):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(first_batches(1, seed=4)[0][0], whole[0][0])  # another seed, other batches


def test_train_rows_are_the_rows_of_train_batches():
    whole = np.concatenate([images[:, 0] for images, _ in first_batches(7, seed=5)])
    rows = train_rows(N, batch_size=4, seed=5, start_step=2, steps=5)
    assert rows.dtype == np.int32 and rows.shape == (20,)
    np.testing.assert_array_equal(rows, whole[8:])
