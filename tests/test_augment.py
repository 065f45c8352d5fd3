"""Augmentation layers: exact semantics of scale / flip / pad-crop / cutout, on every backend."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from improve_nas.data import Cutout, ImageAugmentation, PadAndCrop, RandomFlip, Rescale
from improve_nas.errors import UsageError

pytestmark = pytest.mark.multibackend

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK_SCRIPT = ROOT / "tests" / "backend_check_augment.py"


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _images(count=8, size=32, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), np.uint8)


def _scaled(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0 - 0.5) * 2.0


def test_keeps_shape_and_maps_into_minus_one_one():
    images = _images()
    for training in (False, True):
        out = _np(ImageAugmentation(seed=0)(images, training=training))
        assert out.shape == images.shape
        assert out.dtype == np.float32
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_outside_training_only_scales():
    images = _images()
    layer = ImageAugmentation(seed=0)
    np.testing.assert_allclose(_np(layer(images)), _scaled(images), atol=1e-6)
    np.testing.assert_allclose(_np(layer(images, training=False)), _scaled(images), atol=1e-6)
    assert _np(Rescale()(np.array([[0.0, 255.0]]))).tolist() == [[-1.0, 1.0]]


def test_cutout_zeroes_exactly_one_clipped_square():
    images = np.full((256, 32, 32, 3), 255, np.uint8)  # scales to all ones
    out = _np(ImageAugmentation(augmentation="none", cutout=True, seed=1)(images, training=True))
    assert set(np.unique(out)) == {0.0, 1.0}
    clipped = 0
    for image in out:
        zero = image == 0
        assert np.all(zero == zero[..., :1]), "cutout covers all channels"
        rows, cols = np.flatnonzero(zero[..., 0].any(1)), np.flatnonzero(zero[..., 0].any(0))
        # One axis-aligned rectangle: contiguous rows x contiguous cols, all of it zero.
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        assert zero[..., 0].sum() == len(rows) * len(cols)
        # The centre lies inside the image, so at least half a side always remains.
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        for band in (rows, cols):
            if len(band) < 16:  # only a square that touches a border is smaller
                assert band.min() == 0 or band.max() == 31
                clipped += 1
    assert clipped > 0


def test_pad_and_crop_shifts_by_at_most_pad_and_zero_fills():
    size, pad = 12, 3
    # Distinct non-zero pixels, so each output pins down its shift.
    base = np.arange(1, size * size + 1, dtype=np.float32).reshape(1, size, size, 1)
    images = np.repeat(base, 64, axis=0)
    out = _np(PadAndCrop(pad=pad, seed=2)(images, training=True))
    shifts = set()
    for image in out:
        padded = np.pad(base[0, ..., 0], pad)
        matches = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                   if np.array_equal(image[..., 0], padded[pad + dy:pad + dy + size,
                                                            pad + dx:pad + dx + size])]
        assert len(matches) == 1, "output is the input shifted by <= pad, zero-filled"
        shifts.add(matches[0])
    assert len(shifts) > 10  # per-example offsets


def test_flip_is_a_mirror_applied_per_example():
    images = _images(count=64, size=6).astype(np.float32)
    out = _np(RandomFlip(seed=3)(images, training=True))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_randomness_differs_per_example_within_a_batch():
    images = np.repeat(_images(count=1), 16, axis=0)
    out = _np(ImageAugmentation(seed=4)(images, training=True))
    assert len({o.tobytes() for o in out}) == 16


def test_seed_determines_the_result():
    images = _images()
    first = _np(ImageAugmentation(seed=5)(images, training=True))
    again = _np(ImageAugmentation(seed=5)(images, training=True))
    other = _np(ImageAugmentation(seed=6)(images, training=True))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_repeated_calls_draw_fresh_randomness():
    images = _images()
    layer = ImageAugmentation(seed=5)
    assert not np.array_equal(_np(layer(images, training=True)), _np(layer(images, training=True)))


def test_options_select_the_transforms():
    images = _images()
    plain = ImageAugmentation(augmentation="none", cutout=False, seed=0)
    np.testing.assert_allclose(_np(plain(images, training=True)), _scaled(images), atol=1e-6)
    assert not np.allclose(_np(ImageAugmentation(augmentation="basic", cutout=False, seed=0)(
        images, training=True)), _scaled(images))


@pytest.mark.parametrize("kwargs, needle", [
    ({"augmentation": "inception"}, "basic, none"),
    ({"pad": -1}, "pad=-1"),
    ({"cutout_size": 2.5}, "cutout_size=2.5"),
    ({"cutout": "yes"}, "cutout='yes'"),
])
def test_bad_options_raise_usage_error(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        ImageAugmentation(**kwargs)


def test_config_round_trip_rebuilds_the_same_layer():
    layer = ImageAugmentation(augmentation="basic", cutout=False, pad=2, cutout_size=8, seed=9)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is ImageAugmentation
    assert restored.get_config() == layer.get_config()
    images = _images()
    np.testing.assert_array_equal(_np(restored(images, training=True)),
                                  _np(layer(images, training=True)))
    for sub in (RandomFlip(seed=1), PadAndCrop(pad=3, seed=1), Cutout(size=5, seed=1), Rescale()):
        assert type(sub).from_config(sub.get_config()).get_config() == sub.get_config()


def _load_check_module():
    spec = importlib.util.spec_from_file_location("backend_check_augment", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_statistics_on_tensorflow_and_jax():
    other_backend = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"
    env = {**os.environ, "KERAS_BACKEND": other_backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # The other backend starts first and runs while this one computes its statistics.
    with subprocess.Popen([sys.executable, str(CHECK_SCRIPT)], env=env, cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        here = _load_check_module().augmentation_statistics()
        stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    there = json.loads(stdout.strip().splitlines()[-1])
    assert {here["backend"], there["backend"]} == {"tensorflow", "jax"}
    # Analytic expectations for 2048 images; tolerances are ~5 standard errors.
    side = np.mean([min(32, c + 8) - max(0, c - 8) for c in range(32)])  # 14 pixels on average
    for stats in (here, there):
        assert abs(stats["flip_rate"] - 0.5) < 0.055
        assert abs(stats["cutout_area"] - side**2 / 32**2) < 0.01
        np.testing.assert_allclose(stats["shift_histogram"], 1 / 9, atol=0.035)
    assert abs(here["flip_rate"] - there["flip_rate"]) < 0.07
    assert abs(here["cutout_area"] - there["cutout_area"]) < 0.012


def _tiny_model(augmentation: ImageAugmentation) -> keras.Model:
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(augmentation(inputs)))
    return keras.Model(inputs, keras.layers.Dense(10)(features))


def test_augments_inside_a_model_under_fit():
    augmentation = ImageAugmentation(seed=0, pad=2, cutout_size=4)
    model = _tiny_model(augmentation)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [_np(a.seed_generator.state.value).copy() for a in augmentation.augmenters]
    images, labels = _images(count=32, size=8), np.arange(32) % 10
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [_np(a.seed_generator.state.value) for a in augmentation.augmenters]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after)), "fit drew random numbers"
    # Inference does not augment: repeated predictions agree.
    np.testing.assert_allclose(model.predict(images, verbose=0), model.predict(images, verbose=0))


def test_runs_inside_tf_data_map():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data runs Keras layers on the TensorFlow backend only")
    import tensorflow as tf

    layer = ImageAugmentation(seed=0, pad=2, cutout_size=4)
    images = _images(count=16, size=8)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(8).map(
        lambda batch: layer(batch, training=True))
    batches = [b.numpy() for b in dataset]
    assert [b.shape for b in batches] == [(8, 8, 8, 3)] * 2
    assert all(b.dtype == np.float32 and b.min() >= -1 and b.max() <= 1 for b in batches)
    assert not np.allclose(np.concatenate(batches), _scaled(images))
