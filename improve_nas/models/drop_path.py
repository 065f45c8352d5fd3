"""DropPath: drops a cell operation's output for whole examples (NASNet's ScheduledDropPath)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="improve_nas")
class DropPath(keras.layers.Layer):
    """Drops a whole op output per example with probability ``1 - keep_prob``, rescaled.

    ``y = x / keep_prob * floor(keep_prob + U[0, 1))`` with one uniform draw per example,
    so ``E[y] = x``. Identity outside training. ``keep_prob`` is passed per call because
    it ramps with the training step (see `cells.Cell`).

    Args:
        seed: Optional integer seed of this layer's random stream.
    """

    def __init__(self, *, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights; may first run long after the model is built

    def call(self, x, keep_prob, training=False):
        if not training:
            return x
        batch = ops.shape(x)[0]
        noise_shape = (batch,) + (1,) * (len(x.shape) - 1)
        # The mask is drawn in float32 even under mixed precision: bfloat16 would bias it.
        keep_prob = ops.cast(keep_prob, "float32")
        noise = keras.random.uniform(noise_shape, dtype="float32", seed=self.seed_generator)
        scale = ops.floor(keep_prob + noise) / keep_prob
        return x * ops.cast(scale, x.dtype)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
