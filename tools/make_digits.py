"""Writes improve_nas/data/digits.npz, the `--dataset=digits` split, from scikit-learn's copy of the digits.

Run once, by hand, with scikit-learn installed (`python tools/make_digits.py`); the archive is committed, so
neither users nor CI need scikit-learn. The split is the one improve_nas drew with scikit-learn before it shipped
the file (stratified by class, test_size=360, random_state=0; pixels 0..16 rescaled to 0..255, rounded half to
even), so results from before and after read the same images. tests/test_data.py checks the file against
`sklearn_split()` whenever scikit-learn is installed.

The data: "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), UCI Machine Learning
Repository, https://doi.org/10.24432/C50P49, licensed CC BY 4.0.
"""

from __future__ import annotations

import os
import sys

import numpy as np

NUM_TEST = 360  # 20 % of the 1,797 images; the other 1,437 train.
SPLIT_SEED = 0
TARGET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "improve_nas", "data", "digits.npz")


def sklearn_split() -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test as uint8 [N, 8, 8, 1] images and int32 labels."""
    from sklearn import datasets, model_selection

    bunch = datasets.load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images, labels, test_size=NUM_TEST, stratify=labels, random_state=SPLIT_SEED)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def main() -> int:
    np.savez_compressed(TARGET, **sklearn_split())
    print(f"wrote {TARGET} ({os.path.getsize(TARGET):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
