"""Statistics of the augmentation layers on the current Keras backend, printed as JSON.

`tests/test_augment.py` computes these in-process and runs this file in a subprocess with the
other backend (KERAS_BACKEND=tensorflow or jax) to check both backends augment alike. The RNGs
differ between backends, so the test compares statistics, not pixels.
"""

from __future__ import annotations

import json

import numpy as np

NUM_IMAGES = 2048
SIZE = 32  # CIFAR-sized, so the cutout statistics match the paper's 16x16 on 32x32.
PAD = 4
CUTOUT_SIZE = 16


def augmentation_statistics(seed: int = 7) -> dict:
    """Flip rate, mean cutout area fraction and the histogram of crop shifts (-PAD..PAD)."""
    import keras

    from improve_nas.data import Cutout, PadAndCrop, RandomFlip

    # Flip: a left-to-right ramp tells a mirrored image from an unchanged one.
    ramp = np.broadcast_to(np.arange(SIZE, dtype=np.float32)[None, None, :, None],
                           (NUM_IMAGES, SIZE, SIZE, 1))
    flipped = keras.ops.convert_to_numpy(RandomFlip(seed=seed)(ramp, training=True))
    flip_rate = float(np.mean(flipped[:, 0, 0, 0] > flipped[:, 0, -1, 0]))

    ones = np.ones((NUM_IMAGES, SIZE, SIZE, 1), np.float32)
    cut = keras.ops.convert_to_numpy(Cutout(size=CUTOUT_SIZE, seed=seed)(ones, training=True))
    cutout_area = float(np.mean(cut == 0))

    # Crop: the zero rows at the top/bottom of a cropped all-ones image give the vertical shift.
    cropped = keras.ops.convert_to_numpy(PadAndCrop(pad=PAD, seed=seed)(ones, training=True))
    zero_rows = np.all(cropped[..., 0] == 0, axis=2)  # [N, H]
    top = np.argmin(zero_rows, axis=1)  # zero rows before the first image row
    bottom = np.argmin(zero_rows[:, ::-1], axis=1)
    shift = bottom - top  # in [-PAD, PAD]
    histogram = np.bincount(shift + PAD, minlength=2 * PAD + 1) / NUM_IMAGES
    return {"backend": keras.backend.backend(), "flip_rate": flip_rate,
            "cutout_area": cutout_area, "shift_histogram": histogram.tolist()}


if __name__ == "__main__":
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root
    print(json.dumps(augmentation_statistics()))
