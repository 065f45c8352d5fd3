"""The in-memory dataset every provider returns, and the error for data that cannot be had."""

from __future__ import annotations

import dataclasses

import numpy as np

from improve_nas.errors import UsageError


def error_summary(error: BaseException) -> str:
    """The first line of an exception's message (TFDS errors can run to hundreds of lines)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


class DataUnavailableError(UsageError):
    """A data set exists by name but its data cannot be read or downloaded here.

    Raised instead of ever substituting other (fake) data, so a broken job stops at once.
    """


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """An image classification data set held as NumPy arrays.

    The arrays are stored as read-only views, so the data set cannot be changed after it was
    built (the caller's own arrays stay writeable).

    Attributes:
        name: The `--dataset` spec it was loaded from, e.g. `"cifar10"` or `"npz:/data/x.npz"`.
        num_classes: Number of classes K; every label lies in `[0, K)`.
        image_shape: `(height, width, channels)` of every image.
        x_train: uint8 `[N_train, H, W, C]`.
        y_train: int32 `[N_train]`.
        x_test: uint8 `[N_test, H, W, C]`.
        y_test: int32 `[N_test]`.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        # Providers are ours, so a violated invariant is a bug, not user input: assert-like errors.
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        for images, labels, split in ((self.x_train, self.y_train, "train"),
                                      (self.x_test, self.y_test, "test")):
            if images.dtype != np.uint8 or labels.dtype != np.int32:
                raise TypeError(f"{split}: expected uint8 images and int32 labels, "
                                f"got {images.dtype} and {labels.dtype}")
            if images.shape[1:] != self.image_shape or labels.shape != images.shape[:1]:
                raise ValueError(f"{split}: images {images.shape} and labels {labels.shape} do not "
                                 f"match image_shape {self.image_shape}")
        for field in ("x_train", "y_train", "x_test", "y_test"):
            view = getattr(self, field).view()
            view.flags.writeable = False
            object.__setattr__(self, field, view)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, num_classes={self.num_classes}, "
                f"image_shape={self.image_shape}, train={len(self.x_train)}, test={len(self.x_test)})")
