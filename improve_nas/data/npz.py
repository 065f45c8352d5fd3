"""User data from an `.npz` archive (`--dataset=npz:PATH`).

The archive holds `x_train, y_train, x_test, y_test`. Images are `[N, H, W]` (one channel is
added) or `[N, H, W, C]`; labels are `[N]` or `[N, 1]`; num_classes is the largest label + 1
over both partitions.

Image dtype: uint8 is taken as is. Other integer or float arrays are accepted only when every
value is a whole number in 0..255 (for example int64 pixels written by NumPy defaults) and are
converted exactly; anything else (floats in [0, 1], negative values, booleans) is rejected, so
pixels are never silently rescaled. Labels must be whole, non-negative numbers of any integer
or float dtype.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from improve_nas.data.base import ImageDataset, error_summary
from improve_nas.errors import UsageError

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")


def check_npz_file(path: str) -> None:
    """Checks, without reading any array, that `path` is a readable `.npz` with the required keys.

    Raises:
        UsageError: naming the file and what is wrong with it.
    """
    with _open(path) as archive:
        _check_keys(path, archive.files)


def load_npz(path: str) -> ImageDataset:
    """Loads and validates an `.npz` data set.

    Args:
        path: Path of the archive (`~` is expanded).

    Returns:
        The data set, named `"npz:<path>"`.

    Raises:
        UsageError: one line naming the file and the problem (missing, not an npz, missing keys,
            length mismatch, bad labels, bad image rank or dtype, differing train/test shapes).
    """
    with _open(path) as archive:
        _check_keys(path, archive.files)
        try:
            arrays = {key: archive[key] for key in REQUIRED_KEYS}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
            raise UsageError(f"npz:{path}: cannot read arrays ({error_summary(error)})") from None
    x_train = _images(path, "x_train", arrays["x_train"])
    x_test = _images(path, "x_test", arrays["x_test"])
    y_train = _labels(path, "y_train", arrays["y_train"], len(x_train))
    y_test = _labels(path, "y_test", arrays["y_test"], len(x_test))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(f"npz:{path}: train images are {x_train.shape[1:]} but test images are "
                         f"{x_test.shape[1:]}; both partitions need the same [H, W, C]")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    return ImageDataset(name=f"npz:{path}", num_classes=num_classes, image_shape=x_train.shape[1:],
                        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _open(path: str) -> np.lib.npyio.NpzFile:
    full_path = os.path.expanduser(path)
    if not os.path.isfile(full_path):
        raise UsageError(f"npz:{path}: file not found")
    try:
        # allow_pickle=False: a data file must never run code when it is read.
        archive = np.load(full_path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise UsageError(f"npz:{path}: not a valid .npz archive ({error_summary(error)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"npz:{path}: holds a single .npy array, not an .npz archive with "
                         f"{', '.join(REQUIRED_KEYS)}")
    return archive


def _check_keys(path: str, keys: list[str]) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in keys]
    if missing:
        raise UsageError(f"npz:{path}: missing {', '.join(missing)}; "
                         f"required keys are {', '.join(REQUIRED_KEYS)}")


def _images(path: str, key: str, images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise UsageError(f"npz:{path}: {key} has shape {images.shape}; "
                         "expected [N, H, W] or [N, H, W, C]")
    if len(images) == 0:
        raise UsageError(f"npz:{path}: {key} is empty")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf" or not _whole_in_range(images, 0, 255):
        raise UsageError(f"npz:{path}: {key} has dtype {images.dtype} with values that are not "
                         "whole numbers in 0..255; store uint8 pixels")
    return images.astype(np.uint8)


def _labels(path: str, key: str, labels: np.ndarray, count: int) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UsageError(f"npz:{path}: {key} has shape {labels.shape}; expected [N] or [N, 1]")
    if len(labels) != count:
        raise UsageError(f"npz:{path}: {key} has {len(labels)} labels but x_{key[2:]} has "
                         f"{count} images")
    if labels.dtype.kind not in "iuf" or not _whole_in_range(labels, 0, np.iinfo(np.int32).max):
        raise UsageError(f"npz:{path}: {key} (dtype {labels.dtype}) must hold non-negative "
                         "integer class ids")
    return labels.astype(np.int32)


def _whole_in_range(values: np.ndarray, low: int, high: int) -> bool:
    # NaN fails every comparison, so it is rejected too.
    return bool(np.all((values >= low) & (values <= high) & (values == np.round(values))))

