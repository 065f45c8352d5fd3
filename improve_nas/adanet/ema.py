"""Zero-debiased exponential moving average of a scalar, as a Keras layer (docs/original_code.md §6.7).

AdaNet selects candidates by the EMA of their training AdaNet loss when no evaluator is used. The
state lives in the layer's non-trainable variables, so it is saved with the model's weights
(resume continues it) and, unlike a Keras metric, is not reset at epoch boundaries. Updates made
inside `Model.compute_loss` survive on both backends (Keras 3.15: the JAX trainer carries
non-trainable variables assigned there; `tests/test_adanet_iteration_model.py` checks it).
"""

from __future__ import annotations

import keras
from keras import ops


class ZeroDebiasedEma(keras.layers.Layer):
    """`biased ← d·biased + (1−d)·x`, `n ← n + 1`; value `biased / (1 − dⁿ)` (NaN before any update)."""

    def __init__(self, decay: float = 0.9, **kwargs):
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.decay = float(decay)
        # "mean": under a tf.distribute strategy each replica assigns its own update (from its share of the batch);
        # the replicas' values are averaged, so the EMA is the global batch's (with equal shares, the mean of the
        # replicas' mean losses is the batch's mean loss), identical on every replica. No effect on one device.
        self.biased = self.add_weight(shape=(), initializer="zeros", trainable=False, name="biased",
                                      aggregation="mean")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count",
                                     aggregation="mean")
        self.built = True

    def update(self, value) -> None:
        value = ops.cast(value, self.biased.dtype)
        self.biased.assign(self.decay * self.biased + (1.0 - self.decay) * value)
        self.count.assign(self.count + 1.0)

    def result(self):
        return self.biased / (1.0 - ops.power(self.decay, self.count))

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}
