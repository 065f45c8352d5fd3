"""Data providers (`--dataset`) and the augmentation layers the models run on device.

Importing this package imports neither TensorFlow nor TFDS: the providers that need them
import them when called, because the augmentation layers also serve JAX-backend model code.
"""

from __future__ import annotations

from improve_nas.data.augment import (
    AUGMENTATION_CHOICES,
    Cutout,
    ImageAugmentation,
    PadAndCrop,
    RandomFlip,
    Rescale,
)
from improve_nas.data.base import DataUnavailableError, ImageDataset
from improve_nas.data.registry import DATASET_CHOICES, load_dataset, validate_dataset_spec
from improve_nas.data.stream import make_stream

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
    "make_stream",
    "validate_dataset_spec",
]
