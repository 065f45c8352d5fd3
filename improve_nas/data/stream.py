"""A tf.data stream over in-host-memory arrays, for data that should not live on the device.

The default path keeps the data set on the accelerator and augments inside the model; this
stream is the fallback. It yields raw uint8 images and int32 labels: augmentation stays in the
model (`improve_nas.data.augment`), so both paths train on exactly the same inputs.
"""

from __future__ import annotations

import numpy as np

from improve_nas.errors import UsageError


def make_stream(images: np.ndarray, labels: np.ndarray, *, batch_size: int, training: bool,
                seed: int | None = None, shuffle_buffer: int | None = None):
    """Builds a `tf.data.Dataset` of `(images uint8 [B,H,W,C], labels int32 [B])` batches.

    Training: shuffled, repeated forever, every batch full (a static batch size; with an
    endless stream no example is lost). Evaluation: one pass in order, the partial last batch
    kept (SPEC §7.1: 10,000 test images at batch 32 end with a batch of 16).

    Shuffling permutes example *indices* and gathers whole batches, so even a full shuffle
    costs 8 bytes per example instead of a second copy of the images.

    Args:
        images: `[N, H, W, C]` images.
        labels: `[N]` class ids.
        batch_size: Examples per batch.
        training: Shuffle and repeat when True; one ordered pass when False.
        seed: Shuffle seed; None draws a fresh order each run.
        shuffle_buffer: Shuffle buffer in examples; None (default) shuffles the whole data set
            uniformly. The 2019 code used 500, which barely mixes data sorted by class.

    Returns:
        The dataset, prefetching.

    Raises:
        UsageError: a non-positive batch size or shuffle buffer, no examples, or mismatched
            lengths.
    """
    import tensorflow as tf  # Only the streaming path needs TensorFlow.

    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise UsageError(f"shuffle_buffer must be >= 1 or None, got {shuffle_buffer}")
    if len(images) != len(labels):
        raise UsageError(f"make_stream: {len(images)} images but {len(labels)} labels")
    count = len(images)
    if count == 0:
        raise UsageError("make_stream: no examples to stream")
    images = tf.convert_to_tensor(np.asarray(images, np.uint8))
    labels = tf.convert_to_tensor(np.asarray(labels).reshape(count).astype(np.int32))

    indices = tf.data.Dataset.range(count)
    if training:
        indices = indices.shuffle(shuffle_buffer or count, seed=seed, reshuffle_each_iteration=True)
        indices = indices.repeat().batch(batch_size, drop_remainder=True)
    else:
        indices = indices.batch(batch_size)
    batches = indices.map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
