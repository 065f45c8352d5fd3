"""Data providers and `--dataset` specs (TensorFlow backend only)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from improve_nas.data import (
    DATASET_CHOICES,
    DataUnavailableError,
    ImageDataset,
    load_dataset,
    validate_dataset_spec,
)
from improve_nas.errors import UsageError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _check_dataset(dataset: ImageDataset, *, num_classes, image_shape, train, test):
    assert dataset.num_classes == num_classes
    assert dataset.image_shape == image_shape
    assert dataset.x_train.shape == (train, *image_shape)
    assert dataset.x_test.shape == (test, *image_shape)
    assert dataset.x_train.dtype == dataset.x_test.dtype == np.uint8
    assert dataset.y_train.shape == (train,) and dataset.y_test.shape == (test,)
    assert dataset.y_train.dtype == dataset.y_test.dtype == np.int32
    for labels in (dataset.y_train, dataset.y_test):
        assert labels.min() >= 0 and labels.max() < num_classes


# --- fake ------------------------------------------------------------------------------------

def test_fake_is_small_deterministic_and_covers_all_classes():
    dataset = load_dataset("fake", seed=3)
    _check_dataset(dataset, num_classes=10, image_shape=(32, 32, 3), train=128, test=64)
    assert set(dataset.y_train) == set(dataset.y_test) == set(range(10))
    again, other = load_dataset("fake", seed=3), load_dataset("fake", seed=4)
    np.testing.assert_array_equal(dataset.x_train, again.x_train)
    np.testing.assert_array_equal(dataset.y_test, again.y_test)
    assert not np.array_equal(dataset.x_train, other.x_train)


def test_fake_classes_are_learnable():
    dataset = load_dataset("fake", seed=0)
    # Nearest class-mean colour, fitted on train, must beat chance (10 %) by far on test.
    colour = lambda x: x.reshape(len(x), -1, 3).mean(axis=1)  # noqa: E731
    means = np.stack([colour(dataset.x_train[dataset.y_train == k]).mean(0) for k in range(10)])
    distances = ((colour(dataset.x_test)[:, None, :] - means[None]) ** 2).sum(-1)
    assert np.mean(distances.argmin(1) == dataset.y_test) > 0.8


# --- digits ----------------------------------------------------------------------------------

def test_digits_split_is_fixed_stratified_and_full_range():
    dataset = load_dataset("digits", seed=1)
    _check_dataset(dataset, num_classes=10, image_shape=(8, 8, 1), train=1437, test=360)
    assert dataset.x_train.max() == 255 and dataset.x_train.min() == 0
    assert np.bincount(dataset.y_test, minlength=10).min() >= 35  # every class ~36 of 360
    other_seed = load_dataset("digits", seed=2)
    np.testing.assert_array_equal(dataset.x_train, other_seed.x_train)
    np.testing.assert_array_equal(dataset.y_test, other_seed.y_test)
    # Stratified: every class keeps its share of the 1,797 (174..183 per class) in both parts.
    total = np.bincount(dataset.y_train, minlength=10) + np.bincount(dataset.y_test, minlength=10)
    assert total.sum() == 1797 and total.min() >= 174
    assert np.all(np.abs(np.bincount(dataset.y_test, minlength=10) - total * 360 / 1797) <= 1)


def test_shipped_digits_are_scikit_learn_s_split():
    pytest.importorskip("sklearn")  # only tools/make_digits.py and this check need it
    spec = importlib.util.spec_from_file_location("make_digits", ROOT / "tools" / "make_digits.py")
    make_digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_digits)
    expected, dataset = make_digits.sklearn_split(), load_dataset("digits")
    for name, array in expected.items():
        np.testing.assert_array_equal(getattr(dataset, name), array, err_msg=name)
        assert getattr(dataset, name).dtype == array.dtype


def test_image_dataset_is_immutable():
    dataset = load_dataset("fake")
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.num_classes = 3
    with pytest.raises(ValueError, match="read-only"):
        dataset.x_train[0, 0, 0, 0] = 1


# --- TFDS: cifar10, cifar100, tfds:NAME ---------------------------------------------------------
# tfds.testing.mock_data generates random examples from each dataset's feature spec in code
# (policy AUTO falls back to USE_CODE when data_dir holds no metadata), so this runs offline.

@pytest.mark.parametrize("spec, num_classes, image_shape", [
    ("cifar10", 10, (32, 32, 3)),
    ("cifar100", 100, (32, 32, 3)),
    ("tfds:mnist", 10, (28, 28, 1)),
])
def test_tfds_providers_through_mocked_tfds(spec, num_classes, image_shape, tmp_path):
    import tensorflow_datasets as tfds

    # Read chunks of 2 examples, so the chunks are concatenated (with a partial last one).
    with tfds.testing.mock_data(num_examples=5), mock.patch(
            "improve_nas.data.tfds_source._CHUNK", 2):
        dataset = load_dataset(spec, data_dir=str(tmp_path))
    assert dataset.name == spec
    _check_dataset(dataset, num_classes=num_classes, image_shape=image_shape, train=5, test=5)


def test_tfds_passes_data_dir_and_asks_for_train_and_test(tmp_path):
    import tensorflow_datasets as tfds

    calls = []
    real_load = tfds.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    with tfds.testing.mock_data(num_examples=3), mock.patch.object(tfds, "load", recording_load):
        load_dataset("cifar100", data_dir=str(tmp_path))
    assert calls == [{"split": ["train", "test"], "data_dir": str(tmp_path), "as_supervised": True}]


def test_tfds_failure_is_a_usage_error_never_fake_data(tmp_path):
    import tensorflow_datasets as tfds

    def no_network(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\nretry 2 of 3 ...")

    with mock.patch.object(tfds, "load", no_network):
        with pytest.raises(DataUnavailableError) as raised:
            load_dataset("cifar10", data_dir=str(tmp_path))
    message = str(raised.value)
    assert isinstance(raised.value, UsageError)
    assert "\n" not in message
    assert "cifar10" in message and str(tmp_path) in message and "--data_dir" in message
    assert "ConnectionError: Failed to resolve" in message


def test_tfds_missing_files_without_download_is_unavailable(tmp_path):
    import tensorflow_datasets as tfds

    real_load = tfds.load
    offline = lambda *a, **k: real_load(*a, **{**k, "download": False})  # noqa: E731
    with mock.patch.object(tfds, "load", offline):
        with pytest.raises(DataUnavailableError, match="could not find data"):
            load_dataset("cifar100", data_dir=str(tmp_path))


@pytest.mark.parametrize("spec, needle", [
    ("tfds:no_such_dataset_xyz", "not a TFDS dataset"),
    ("tfds:imdb_reviews", "needs an 'image' feature"),  # text, checked from code metadata only
    ("tfds:Bad Name", "not a TFDS name"),
])
def test_unusable_tfds_names(spec, needle, tmp_path):
    with pytest.raises(UsageError, match=needle):
        load_dataset(spec, data_dir=str(tmp_path))


# --- npz -------------------------------------------------------------------------------------

def _write_npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 5, 4), np.uint8),
        "y_train": np.array([[0], [1], [2], [3], [4], [0]]),
        "x_test": rng.integers(0, 256, (3, 5, 4), np.uint8),
        "y_test": np.array([6, 1, 2]),
    }
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return str(path)


def test_npz_adds_channel_flattens_labels_and_counts_classes_over_both(tmp_path):
    path = _write_npz(tmp_path / "d.npz")
    validate_dataset_spec(f"npz:{path}")
    dataset = load_dataset(f"npz:{path}")
    assert dataset.name == f"npz:{path}"
    _check_dataset(dataset, num_classes=7, image_shape=(5, 4, 1), train=6, test=3)
    assert dataset.y_train.tolist() == [0, 1, 2, 3, 4, 0]


def test_npz_converts_exact_integer_pixels_of_other_dtypes(tmp_path):
    pixels = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) % 256  # int64, 0..95
    path = _write_npz(tmp_path / "d.npz", x_train=pixels, y_train=np.array([0.0, 1.0]),
                      x_test=pixels.astype(np.float32), y_test=np.array([1, 0], np.uint8))
    dataset = load_dataset(f"npz:{path}")
    np.testing.assert_array_equal(dataset.x_train, pixels)
    assert dataset.x_test.dtype == np.uint8 and dataset.image_shape == (4, 4, 3)


@pytest.mark.parametrize("overrides, needle", [
    ({"y_test": None}, "missing y_test; required keys are x_train, y_train, x_test, y_test"),
    ({"y_train": np.arange(5)}, "y_train has 5 labels but x_train has 6 images"),
    ({"y_test": np.array([0, -1, 2])}, "y_test .* must hold non-negative integer class ids"),
    ({"y_test": np.array([0.5, 1, 2])}, "y_test .* must hold non-negative integer class ids"),
    ({"y_test": np.array(["a", "b", "c"])}, "y_test .* must hold non-negative integer class ids"),
    ({"y_test": np.zeros((3, 2))}, r"y_test has shape \(3, 2\); expected \[N\] or \[N, 1\]"),
    ({"x_train": np.zeros((6, 5), np.uint8)}, r"x_train has shape \(6, 5\); expected"),
    ({"x_train": np.zeros((6, 5, 4, 1, 1), np.uint8)}, "x_train has shape"),
    ({"x_test": np.full((3, 5, 4), 0.5)}, "x_test has dtype float64 .* store uint8 pixels"),
    ({"x_test": np.full((3, 5, 4), 256)}, "x_test has dtype int64"),
    ({"x_test": np.zeros((3, 5, 4, 3), np.uint8)}, r"train images are \(5, 4, 1\) but test"),
    ({"x_train": np.zeros((0, 5, 4), np.uint8), "y_train": np.zeros(0, int)}, "x_train is empty"),
])
def test_npz_content_errors_name_file_and_problem(tmp_path, overrides, needle):
    path = _write_npz(tmp_path / "d.npz", **overrides)
    with pytest.raises(UsageError, match=f"^npz:{path}: {needle}") as raised:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(raised.value)


def test_npz_file_errors_are_caught_by_the_cheap_check(tmp_path):
    garbled = tmp_path / "garbled.npz"
    garbled.write_bytes(b"\x00not a zip archive at all" * 10)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((pathlib.Path(_write_npz(tmp_path / "ok.npz"))).read_bytes()[:200])
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    missing_keys = _write_npz(tmp_path / "keys.npz", x_test=None, y_test=None)
    cases = [
        (tmp_path / "absent.npz", "file not found"),
        (garbled, "not a valid .npz archive"),
        (truncated, "not a valid .npz archive"),
        (single, "holds a single .npy array"),
        (missing_keys, "missing x_test, y_test; required keys are"),
    ]
    for path, needle in cases:
        for check in (validate_dataset_spec, load_dataset):
            with pytest.raises(UsageError, match=needle) as raised:
                check(f"npz:{path}")
            assert str(path) in str(raised.value) and "\n" not in str(raised.value)


# --- specs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["cifar11", "CIFAR10", "", "mnist", "npz", "tfds:", "npz:"])
def test_bad_specs_are_usage_errors(spec):
    with pytest.raises(UsageError) as raised:
        validate_dataset_spec(spec)
    assert "\n" not in str(raised.value)
    if spec in ("cifar11", "CIFAR10", "mnist", "npz"):
        assert repr(spec) in str(raised.value)
        assert ", ".join(DATASET_CHOICES) in str(raised.value)


def test_validation_and_import_need_neither_tensorflow_nor_data(tmp_path):
    path = _write_npz(tmp_path / "d.npz")
    code = (
        "import json, sys\n"
        "import improve_nas.data as d, improve_nas.data.augment\n"
        f"for spec in ['cifar10', 'cifar100', 'digits', 'fake', 'tfds:mnist/x:1.*.*', 'npz:{path}']:\n"
        "    d.validate_dataset_spec(spec)\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules)))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("backend, hidden", [("jax", True), ("tensorflow", False)])
def test_tensorflow_leaves_the_gpus_to_another_backend(backend, hidden, monkeypatch):
    import keras
    import tensorflow as tf

    from improve_nas.data import tfds_source

    calls = []
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind: calls.append((devices, kind)))
    tfds_source.hide_gpus_from_tensorflow_under_other_backends()
    assert calls == ([([], "GPU")] if hidden else [])
