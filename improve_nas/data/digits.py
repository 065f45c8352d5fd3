"""scikit-learn's bundled 8x8 handwritten digits (`--dataset=digits`): real data, fully offline."""

from __future__ import annotations

import numpy as np

from improve_nas.data.base import ImageDataset

NUM_TEST = 360  # 20 % of the 1,797 images; the other 1,437 train.
# Fixed here, not taken from the run's seed, so every run (and every paper comparison) sees the
# same train/test split.
_SPLIT_SEED = 0


def load_digits() -> ImageDataset:
    """Loads the 1,797 digits as uint8 `[N, 8, 8, 1]`, 10 classes, split 1,437 / 360.

    Pixel values 0..16 are rescaled to 0..255 (rounded half to even). The split is
    stratified by class and fixed.

    Returns:
        The data set, named `"digits"`.
    """
    # Imported here: scikit-learn is slow to import and only this provider needs it.
    from sklearn import datasets, model_selection

    bunch = datasets.load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images, labels, test_size=NUM_TEST, stratify=labels, random_state=_SPLIT_SEED)
    return ImageDataset(name="digits", num_classes=10, image_shape=(8, 8, 1),
                        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
