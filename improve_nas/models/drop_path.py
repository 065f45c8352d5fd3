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

    A cell draws the masks of all its paths at once with `scales` and applies them with
    `apply`: one random draw per cell instead of one per path keeps the compiled
    training step smaller (random-number generation is costly to compile).

    Args:
        seed: Optional integer seed of this layer's random stream.
    """

    def __init__(self, *, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights; may first run long after the model is built

    def scales(self, batch_size, count: int, keep_prob):
        """Independent per-example factors for ``count`` paths: ``[count, batch]``, each 0 or ``1 / keep_prob``."""
        # Drawn in float32 even under mixed precision: bfloat16 would bias the masks.
        keep_prob = ops.cast(keep_prob, "float32")
        noise = keras.random.uniform((count, batch_size), dtype="float32", seed=self.seed_generator)
        return ops.floor(keep_prob + noise) / keep_prob

    @staticmethod
    def apply(x, scale):
        """Multiplies each example of ``x`` by its entry of ``scale`` (``[batch]``)."""
        scale = ops.reshape(ops.cast(scale, x.dtype), (-1,) + (1,) * (len(x.shape) - 1))
        return x * scale

    def call(self, x, keep_prob, training=False):
        if not training:
            return x
        return self.apply(x, self.scales(ops.shape(x)[0], 1, keep_prob)[0])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
