"""The 8x8 handwritten digits (`--dataset=digits`): real data, shipped in the package, fully offline.

`digits.npz` beside this module holds the 1,797 images already split 1,437 / 360, stratified by class, exactly
as scikit-learn's `train_test_split(test_size=360, stratify=labels, random_state=0)` splits its copy (written by
tools/make_digits.py, checked by tests/test_data.py), so the split is fixed and the same for every run and seed.

The data: "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), UCI Machine Learning
Repository, https://doi.org/10.24432/C50P49, licensed CC BY 4.0. Pixels 0..16 are rescaled to 0..255.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from improve_nas.data.base import ImageDataset

ARCHIVE = "digits.npz"


def load_digits() -> ImageDataset:
    """Loads the 1,797 digits as uint8 `[N, 8, 8, 1]`, 10 classes, split 1,437 / 360.

    Returns:
        The data set, named `"digits"`.
    """
    with resources.files(__package__).joinpath(ARCHIVE).open("rb") as handle, np.load(handle) as arrays:
        split = {name: arrays[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    return ImageDataset(name="digits", num_classes=10, image_shape=(8, 8, 1), **split)
