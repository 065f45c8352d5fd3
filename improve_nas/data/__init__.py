"""Data providers (`--dataset`) and the augmentation layers the models run on device.

Importing this package imports neither Keras, TensorFlow nor TFDS: the providers that need them
import them when called, and the augmentation layers (which need Keras) load on first access, so
the command line can check its input in a fraction of a second.
"""

from __future__ import annotations

import importlib

from improve_nas.data.base import DataUnavailableError, ImageDataset
from improve_nas.data.registry import DATASET_CHOICES, load_dataset, validate_dataset_spec

_AUGMENTATION_NAMES = ("AUGMENTATION_CHOICES", "Cutout", "ImageAugmentation", "PadAndCrop", "RandomFlip", "Rescale")


def __getattr__(name: str):
    if name in _AUGMENTATION_NAMES:
        return getattr(importlib.import_module("improve_nas.data.augment"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUGMENTATION_CHOICES",
    "DATASET_CHOICES",
    "Cutout",
    "DataUnavailableError",
    "ImageAugmentation",
    "ImageDataset",
    "PadAndCrop",
    "RandomFlip",
    "Rescale",
    "load_dataset",
    "validate_dataset_spec",
]
