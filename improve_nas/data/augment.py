"""CIFAR augmentation as Keras layers that run inside the model, on any backend.

Written with `keras.ops` / `keras.random` only, so the same code augments on the accelerator
under TensorFlow and JAX (and inside `tf.data.Dataset.map` on TensorFlow). Every example draws
its own flip, crop offset and cutout centre; all work is vectorised over the batch. Each random
layer owns a `keras.random.SeedGenerator`, so a seeded layer replays the same sequence.

Semantics follow the 2019 code (docs/original_code.md §7.1), in this order:
  1. always: scale pixels 0..255 to [-1, 1] as `(x / 255 - 0.5) * 2` (no mean/std);
  2. training and `augmentation="basic"`: left-right flip with p = 0.5, then zero-pad `pad`
     pixels per side (0 is mid-grey after scaling) and crop back to H x W at a random offset;
  3. training and `cutout`: zero a `cutout_size` square, centre uniform over all pixels,
     clipped at the borders, in all channels.
Outside training the layer only scales.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from improve_nas.choices import AUGMENTATIONS as AUGMENTATION_CHOICES
from improve_nas.errors import UsageError


@keras.saving.register_keras_serializable(package="improve_nas")
class Rescale(keras.layers.Layer):
    """Maps pixels 0..255 (uint8 or float) to [-1, 1]: `(x / 255 - 0.5) * 2`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True  # Stateless.

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        return (images / 255.0 - 0.5) * 2.0


class _RandomAugmentation(keras.layers.Layer):
    """Base for per-example random layers: identity unless `training`, seeded per layer."""

    def __init__(self, *, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # All state (the seed) exists now; nothing depends on the input shape.

    def call(self, images, training=False):
        return self.augment(images) if training else images

    def augment(self, images):
        """Applies the random transform to a `[B, H, W, C]` batch."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="improve_nas")
class RandomFlip(_RandomAugmentation):
    """Mirrors each image left-right with probability 0.5."""

    def augment(self, images):
        flip = keras.random.uniform((ops.shape(images)[0],), seed=self.seed_generator) < 0.5
        return ops.where(flip[:, None, None, None], ops.flip(images, axis=2), images)


@keras.saving.register_keras_serializable(package="improve_nas")
class PadAndCrop(_RandomAugmentation):
    """Zero-pads `pad` pixels on every side, then crops back to H x W at a random offset.

    Each image moves by a uniform integer shift in `[-pad, pad]` along each axis; what moves in
    from outside is 0.
    """

    def __init__(self, *, pad: int = 4, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.pad = _non_negative_int("pad", pad)

    def augment(self, images):
        if self.pad == 0:
            return images
        batch, height, width, channels = ops.shape(images)
        padded = ops.pad(images, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        padded_height, padded_width = height + 2 * self.pad, width + 2 * self.pad
        offsets = keras.random.randint((batch, 2), 0, 2 * self.pad + 1, seed=self.seed_generator)
        rows = offsets[:, 0:1] + ops.arange(height)[None, :]  # [B, H] rows of the padded image
        cols = offsets[:, 1:2] + ops.arange(width)[None, :]  # [B, W]
        # One gather of whole pixels (all channels) from the flattened batch.
        pixel = (ops.arange(batch)[:, None, None] * (padded_height * padded_width)
                 + rows[:, :, None] * padded_width + cols[:, None, :])  # [B, H, W]
        return ops.take(ops.reshape(padded, (-1, channels)), pixel, axis=0)

    def get_config(self) -> dict:
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="improve_nas")
class Cutout(_RandomAugmentation):
    """Zeroes one `size` x `size` square per image, in all channels (DeVries & Taylor, 2017).

    The centre (cy, cx) is uniform over the integer pixels; rows
    `[max(0, cy - size//2), min(H, cy - size//2 + size))` and likewise columns are zeroed, so
    squares near a border are clipped (for even sizes this is the original's `cy ± size/2`).
    """

    def __init__(self, *, size: int = 16, seed: int | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.size = _non_negative_int("cutout_size", size)

    def augment(self, images):
        batch, height, width = ops.shape(images)[:3]
        in_rows = self._band((batch, 1), height)  # [B, H]
        in_cols = self._band((batch, 1), width)  # [B, W]
        cut = ops.logical_and(in_rows[:, :, None], in_cols[:, None, :])[..., None]
        return ops.where(cut, ops.zeros_like(images), images)

    def _band(self, shape, length):
        """Per example, a mask of the `size` positions around a uniform centre, clipped."""
        start = keras.random.randint(shape, 0, length, seed=self.seed_generator) - self.size // 2
        positions = ops.arange(length)[None, :]
        return ops.logical_and(positions >= start, positions < start + self.size)

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="improve_nas")
class ImageAugmentation(keras.layers.Layer):
    """Scaling plus the CIFAR training augmentation: flip, pad-and-crop, cutout.

    Call on uint8 (or float 0..255) `[B, H, W, C]` images; returns the layer's compute dtype
    (float32 by default) in [-1, 1], same shape. Only `training=True` augments.

    Args:
        augmentation: `"basic"` (flip, then pad-and-crop) or `"none"`.
        cutout: Whether to apply cutout after the other augmentations.
        pad: Zero padding per side before the random crop.
        cutout_size: Side of the cutout square.
        seed: Seed of the layer's random streams; None draws a fresh one.
        **kwargs: Passed to `keras.layers.Layer` (name, dtype, ...).

    Raises:
        UsageError: an unknown `augmentation`, or a negative or non-integer size.
    """

    def __init__(self, *, augmentation: str = "basic", cutout: bool = True, pad: int = 4,
                 cutout_size: int = 16, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if augmentation not in AUGMENTATION_CHOICES:
            raise UsageError(f"augmentation={augmentation!r} is not supported; "
                             f"choices: {', '.join(AUGMENTATION_CHOICES)}")
        if not isinstance(cutout, bool):
            raise UsageError(f"cutout={cutout!r} must be True or False")
        self.augmentation = augmentation
        self.cutout = cutout
        self.pad = _non_negative_int("pad", pad)
        self.cutout_size = _non_negative_int("cutout_size", cutout_size)
        self.seed = seed
        self.rescale = Rescale(dtype=self.dtype_policy, name="rescale")
        # Only the transforms in use are built, so the layer's seed state matches its config.
        self.augmenters = []
        if augmentation == "basic":
            self.augmenters += [
                RandomFlip(seed=_sub_seed(seed, 0), dtype=self.dtype_policy, name="flip"),
                PadAndCrop(pad=pad, seed=_sub_seed(seed, 1), dtype=self.dtype_policy,
                           name="pad_and_crop"),
            ]
        if cutout:
            self.augmenters.append(Cutout(size=cutout_size, seed=_sub_seed(seed, 2),
                                          dtype=self.dtype_policy, name="cutout"))
        self.built = True  # The sub-layers above are built at construction.

    def call(self, images, training=False):
        images = self.rescale(images)
        if training:
            for augmenter in self.augmenters:
                images = augmenter(images, training=True)
        return images

    def get_config(self) -> dict:
        return {**super().get_config(), "augmentation": self.augmentation, "cutout": self.cutout,
                "pad": self.pad, "cutout_size": self.cutout_size, "seed": self.seed}


def _sub_seed(seed: int | None, index: int) -> int | None:
    return None if seed is None else seed + index


def _non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise UsageError(f"{name}={value!r} must be a non-negative integer")
    return int(value)
