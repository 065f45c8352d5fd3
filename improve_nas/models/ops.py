"""The operations a cell applies to its hidden states (docs/original_code.md §3.5).

Every operation maps its input to ``filters`` channels. This module defines the layers of NASNet-A's operations;
`search_ops` those of the search space's others. `make_operation` is the one place that builds any of the 15 by the
name used in `genotype` (`genotype.KNOWN_OPERATIONS`).
"""

from __future__ import annotations

import keras

from improve_nas.errors import UsageError
from improve_nas.models import genotype
from improve_nas.models.layers import (
    BlockSettings,
    ReluConvBN,
    SettingsLayer,
    activation,
    batch_norm,
    clip_if_bounded,
    conv2d,
    separable_conv2d,
)
from improve_nas.models.search_ops import DilatedConv, FactorizedConv


@keras.saving.register_keras_serializable(package="improve_nas")
class StackedSeparableConv(SettingsLayer):
    """``separable_KxK_2``: two ``activation → separable conv → BN`` blocks.

    Only the first block is strided. With bounded activations the output is clipped to ±6.

    Args:
        filters: Output channels of both blocks.
        kernel_size: Depthwise kernel size K.
        strides: Stride of the first block.
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, kernel_size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        policy = self.dtype_policy
        self.separable_1 = separable_conv2d(
            filters, kernel_size, self.settings, strides=strides, name="separable_1", dtype=policy
        )
        self.bn_1 = batch_norm(self.settings, name="bn_1", dtype=policy)
        self.separable_2 = separable_conv2d(filters, kernel_size, self.settings, name="separable_2", dtype=policy)
        self.bn_2 = batch_norm(self.settings, name="bn_2", dtype=policy)

    def build(self, input_shape):
        self.separable_1.build(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self.bn_1.build(output_shape)
        self.separable_2.build(output_shape)
        self.bn_2.build(output_shape)

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        x = self.bn_1(self.separable_1(activation(x, self.settings)), training=training)
        x = self.bn_2(self.separable_2(activation(x, self.settings)), training=training)
        return clip_if_bounded(x, self.settings)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
        }


@keras.saving.register_keras_serializable(package="improve_nas")
class Pool(SettingsLayer):
    """``avg_pool_KxK`` / ``max_pool_KxK`` (K = 3 in NASNet-A) with SAME padding, projected to ``filters``.

    Average pooling excludes the padded cells from the mean (TF semantics, which Keras
    SAME pooling has on every backend; `tests/test_models.py` checks it). When the input
    width differs from ``filters``, a ``conv 1×1 → BN`` follows, without activation.
    With bounded activations the input gets a ReLU6 and the output is clipped to ±6.

    Args:
        kind: ``"avg"`` or ``"max"``.
        filters: Output channels.
        pool_size: The window's side K (3; the search space also has 5 and 7).
        input_channels: Channels of the input (decides the projection).
        strides: Pool stride.
        settings: Shared block settings.
    """

    def __init__(self, *, kind: str, filters: int, input_channels: int, strides: int = 1, pool_size: int = 3,
                 **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.pool_size = pool_size
        self.filters = filters
        self.input_channels = input_channels
        self.strides = strides
        pool_class = {"avg": keras.layers.AveragePooling2D, "max": keras.layers.MaxPooling2D}[kind]
        self.pool = pool_class(
            pool_size, strides=strides, padding="same", data_format=self.settings.data_format, name="pool",
            dtype=self.dtype_policy,
        )
        self.project = input_channels != filters
        if self.project:
            self.conv = conv2d(filters, 1, self.settings, name="conv", dtype=self.dtype_policy)
            self.bn = batch_norm(self.settings, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.pool.build(input_shape)
        if self.project:
            pooled = self.output_shape_for(input_shape, channels=self.input_channels, strides=self.strides)
            self.conv.build(pooled)
            self.bn.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        if self.settings.bounded_activation:
            x = keras.ops.relu6(x)
        x = self.pool(x)
        if self.project:
            x = self.bn(self.conv(x), training=training)
        return clip_if_bounded(x, self.settings)

    def get_config(self):
        return {
            **super().get_config(),
            "kind": self.kind,
            "filters": self.filters,
            "input_channels": self.input_channels,
            "strides": self.strides,
            "pool_size": self.pool_size,
        }


@keras.saving.register_keras_serializable(package="improve_nas")
class Identity(SettingsLayer):
    """The ``none`` op: identity, or ``activation → conv 1×1 (stride) → BN`` when it must
    change the stride or the width. Drop path never applies to it (see `cells.Cell`).

    Args:
        filters: Output channels.
        input_channels: Channels of the input.
        strides: Stride; > 1 forces the projection.
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, input_channels: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.input_channels = input_channels
        self.strides = strides
        self.project = strides > 1 or input_channels != filters
        if self.project:
            self.projection = ReluConvBN(
                filters=filters,
                strides=strides,
                clip_output=True,
                settings=self.settings,
                name="projection",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape):
        if self.project:
            self.projection.build(input_shape)

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        return self.projection(x, training=training) if self.project else x

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "input_channels": self.input_channels,
            "strides": self.strides,
        }


# name -> (layer class, its shape arguments). `Pool` and `Identity` also get `input_channels` (a projection when it
# differs from `filters`); conv_1x1 and conv_3x3 are `ReluConvBN`.
_LAYERS = {
    genotype.IDENTITY: (Identity, {}),
    genotype.CONV_1X3_3X1: (FactorizedConv, {"kernel_size": 3}),
    genotype.CONV_1X7_7X1: (FactorizedConv, {"kernel_size": 7}),
    genotype.DILATED_CONV_3X3: (DilatedConv, {"kernel_size": 3, "separable": False}),
    genotype.AVG_POOL_3X3: (Pool, {"kind": "avg", "pool_size": 3}),
    genotype.MAX_POOL_3X3: (Pool, {"kind": "max", "pool_size": 3}),
    genotype.MAX_POOL_5X5: (Pool, {"kind": "max", "pool_size": 5}),
    genotype.MAX_POOL_7X7: (Pool, {"kind": "max", "pool_size": 7}),
    genotype.CONV_1X1: (ReluConvBN, {"kernel_size": 1, "clip_output": True}),
    genotype.CONV_3X3: (ReluConvBN, {"kernel_size": 3, "clip_output": True}),
    genotype.SEPARABLE_3X3: (StackedSeparableConv, {"kernel_size": 3}),
    genotype.SEPARABLE_5X5: (StackedSeparableConv, {"kernel_size": 5}),
    genotype.SEPARABLE_7X7: (StackedSeparableConv, {"kernel_size": 7}),
    genotype.DILATED_SEPARABLE_3X3: (DilatedConv, {"kernel_size": 3, "separable": True}),
    genotype.DILATED_SEPARABLE_5X5: (DilatedConv, {"kernel_size": 5, "separable": True}),
}
assert tuple(_LAYERS) == genotype.KNOWN_OPERATIONS, "one layer per operation name"


def make_operation(
    operation: str,
    *,
    filters: int,
    input_channels: int | None = None,
    strides: int = 1,
    settings: BlockSettings | None = None,
    name: str | None = None,
    dtype=None,
) -> keras.layers.Layer:
    """The layer of any cell operation (`genotype.KNOWN_OPERATIONS`), mapping its input to ``filters`` channels.

    ``input_channels`` (which decides whether a pool or ``none`` projects) defaults to ``filters``; ``settings`` to
    `BlockSettings()`; ``dtype`` is the layer's dtype policy. An unknown name is a one-line UsageError listing the
    valid ones.
    """
    if operation not in _LAYERS:
        raise UsageError(f"unknown operation {operation!r}; valid: {', '.join(genotype.KNOWN_OPERATIONS)}")
    layer_class, shape = _LAYERS[operation]
    if layer_class in (Pool, Identity):
        shape = {**shape, "input_channels": filters if input_channels is None else input_channels}
    return layer_class(filters=filters, strides=strides, settings=settings if settings is not None else BlockSettings(),
                       name=name, dtype=dtype, **shape)
