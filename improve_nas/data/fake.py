"""A tiny generated data set for smoke runs and tests (`--dataset=fake`)."""

from __future__ import annotations

import numpy as np

from improve_nas.data.base import ImageDataset

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
NUM_TRAIN = 128
NUM_TEST = 64
# Noise around the class colour. Class means are >= 24 apart per channel on average, so a
# model can learn the classes, yet single pixels overlap, so it has to average over the image.
_NOISE_STD = 48.0
# The class -> colour table is the same for every `seed`: it is what the classes *are*.
_CLASS_MEANS = np.random.default_rng(20190814).uniform(32.0, 224.0, size=(NUM_CLASSES, 3))


def load_fake(*, seed: int = 0) -> ImageDataset:
    """Builds 128 train and 64 test images of 32x32x3 over all 10 classes.

    Each image is its class's per-channel mean colour plus Gaussian noise, clipped to 0..255.
    Labels cycle through every class before being shuffled, so each class appears in both
    partitions. The result depends only on `seed`.

    Args:
        seed: Seed for labels and noise.

    Returns:
        The data set, named `"fake"`.
    """
    rng = np.random.default_rng(seed)
    x_train, y_train = _make_split(rng, NUM_TRAIN)
    x_test, y_test = _make_split(rng, NUM_TEST)
    return ImageDataset(name="fake", num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE,
                        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _make_split(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(count) % NUM_CLASSES).astype(np.int32)
    means = _CLASS_MEANS[labels][:, None, None, :]
    noise = rng.normal(0.0, _NOISE_STD, size=(count, *IMAGE_SHAPE))
    images = np.clip(np.rint(means + noise), 0, 255).astype(np.uint8)
    return images, labels
