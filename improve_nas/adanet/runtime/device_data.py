"""The training partition kept on the accelerator, so a training step needs nothing from the host but row numbers.

`fit` is fed only the rows of each batch (`{"rows": int32 [B]}`, from `batches.train_rows`); `DeviceData` gathers the
images and labels of those rows from two non-trainable variables that hold the whole partition. The partition crosses
to the device once per run; per step the host hands over B integers (Keras slices them from one array, no Python
generator runs) and augmentation happens on the device, inside the model. The rows are the same as
`batches.train_batches` would yield, so both input paths train on identical batches.

The variables hold data, not state: checkpoints skip them (`variables_to_skip`), and the layer is never part of a
saved member.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

ROWS = "rows"  # the key of the row numbers in the model's training input


class DeviceData(keras.layers.Layer):
    """Images `[N, ...]` and labels `[N]` as device variables; `images_at(rows)` / `labels_at(rows)` gather rows.

    Create it inside the distribution scope that trains with it (the variables are then replicated on every device).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = keras.Variable(images, dtype=str(images.dtype), trainable=False, name="images")
        self.labels = keras.Variable(np.asarray(labels, dtype="int32"), trainable=False, name="labels")
        self.built = True

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def labels_at(self, rows):
        return ops.take(self.labels, rows, axis=0)

    def images_at(self, rows):
        return ops.take(self.images, rows, axis=0)


def variables_to_skip(model: keras.Model) -> set[int]:
    """`id`s of the data variables a model holds (nothing to checkpoint there)."""
    data = getattr(model, "device_data", None)
    return {id(v) for v in data.variables} if data is not None else set()
