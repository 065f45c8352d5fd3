"""A Keras metric holding the value of the latest training step, not a running mean.

Keras' `Mean` averages from the start of each `fit` call, and the engine calls `fit` once per checkpoint chunk, so a
mean logged at step s would depend on where the chunk began. `StepValue` keeps the step's own value: what the
TensorBoard summaries write, whatever the checkpoint period (the progress bar averages the logs itself).
"""

from __future__ import annotations

import keras
from keras import ops


class StepValue(keras.metrics.Metric):
    """`update_state(x)` replaces the value with the scalar `x`; `result()` is it (0 before any update)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        # "mean": under a tf.distribute strategy each replica holds the value of its share of the batch, and reading
        # it averages them (equal shares: the global batch's mean loss). No effect on one device.
        self.value = self.add_variable(shape=(), initializer="zeros", dtype="float32", aggregation="mean",
                                       name="value")

    def update_state(self, value) -> None:
        self.value.assign(ops.cast(value, "float32"))

    def result(self):
        return ops.convert_to_tensor(self.value)
