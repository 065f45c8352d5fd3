"""The NASNet kernel initializer: TF1's fan-out variance scaling, exactly (docs/original_code.md §3.6, §10.8)."""

from __future__ import annotations

import math
import random

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="improve_nas")
class FanOutTruncatedNormal(keras.initializers.Initializer):
    """TF1 ``variance_scaling_initializer(factor, mode='FAN_OUT', uniform=False)``.

    Draws from a normal with stddev ``sqrt(1.3 * factor / fan_out)`` truncated at two
    standard deviations. Keras' ``VarianceScaling`` divides by 0.8796 instead of
    multiplying by 1.3 (docs/original_code.md §10.8), hence this class. ``fan_out`` is
    ``kh * kw * out`` for a conv kernel ``[kh, kw, in, out]``, ``k * k * 1`` for a
    depthwise kernel ``[k, k, C, 1]`` and ``out`` for a dense kernel ``[in, out]``.

    As with Keras' own initializers, ``seed=None`` draws one fixed seed at construction
    (from Python's `random`, which `keras.utils.set_random_seed` seeds), so every
    kernel needs its own instance: use `kernel_initializer()`. Values come from NumPy:
    the same seed gives the same kernel on every backend, and JAX does not compile one
    sampler per kernel shape (which made building a NASNet take ~30 s on CPU).

    Args:
        factor: The variance-scaling factor (2.0 for ReLU networks).
        seed: Optional integer seed.
    """

    def __init__(self, factor: float = 2.0, seed: int | None = None):
        self.factor = factor
        self.seed = seed
        self._draw_seed = seed if seed is not None else random.randint(1, 10**9)

    def __call__(self, shape, dtype=None):
        shape = tuple(shape)
        fan_out = math.prod(shape[:-2]) * shape[-1] if len(shape) >= 2 else shape[0]
        stddev = math.sqrt(1.3 * self.factor / fan_out)
        rng = np.random.default_rng(self._draw_seed)
        values = rng.standard_normal(shape)
        outside = np.abs(values) > 2.0
        while outside.any():  # resample beyond two standard deviations, as TF does
            values[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2.0
        return ops.convert_to_tensor(values * stddev, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {"factor": self.factor, "seed": self.seed}


def kernel_initializer() -> FanOutTruncatedNormal:
    """A fresh initializer (and seed) per kernel, so equal-shaped kernels differ."""
    return FanOutTruncatedNormal()
