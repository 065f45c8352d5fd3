"""Layers for the search space's operations that NASNet-A does not use and no `ops` layer covers: the factorized
convolutions (Zoph et al. 2018, §3) and the dilated ones (ibid.; DARTS for the separable kind). They follow the
conventions of `ops`: activation first, ``filters`` output channels, SAME padding, bias-free kernels with the NASNet
initializer and L2, BN last, ±6 clipping with bounded activations.

Keras/TensorFlow refuse a stride above 1 together with a dilation above 1 in one convolution, so a strided dilated
operation convolves at stride 1 and keeps every ``strides``-th pixel from the first: the output has the SAME-padded
size ``ceil(n / strides)``, at ``strides**2`` times the arithmetic of a strided convolution.

`ops.make_operation` builds these, like every other operation, by name.
"""

from __future__ import annotations

import keras

from improve_nas.models.initializers import kernel_initializer
from improve_nas.models.layers import (
    BlockSettings,
    Conv2D,
    SettingsLayer,
    activation,
    batch_norm,
    clip_if_bounded,
    conv2d,
)

DILATION = 2


def _subsample(x, strides: int, settings: BlockSettings):
    """Every ``strides``-th pixel from the first: the SAME-padded output size of a strided op."""
    if strides == 1:
        return x
    if settings.data_format == "channels_last":
        return x[:, ::strides, ::strides, :]
    return x[:, :, ::strides, ::strides]


@keras.saving.register_keras_serializable(package="improve_nas")
class FactorizedConv(SettingsLayer):
    """``conv_1xK_Kx1``: ``activation → conv 1×K → conv K×1 → BN`` (NASNet's "1x3 then 3x1" and "1x7 then 7x1").

    The stride is split as in DARTS' ``conv_7x1_1x7``: the 1×K conv strides along the width and the K×1 conv along
    the height, so each conv strides only along the axis its kernel spans and no input row or column is skipped
    (striding a 1×K conv vertically would ignore every other row). Parameters and output shape are those of striding
    the first conv in both axes.

    Args:
        filters: Output channels of both convs.
        kernel_size: K.
        strides: Overall stride.
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, kernel_size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        policy = self.dtype_policy
        self.conv_1xk = conv2d(filters, (1, kernel_size), self.settings, strides=(1, strides), name="conv_1xk",
                               dtype=policy)
        self.conv_kx1 = conv2d(filters, (kernel_size, 1), self.settings, strides=(strides, 1), name="conv_kx1",
                               dtype=policy)
        self.bn = batch_norm(self.settings, name="bn", dtype=policy)

    def build(self, input_shape):
        self.conv_1xk.build(input_shape)
        self.conv_kx1.build(self.conv_1xk.compute_output_shape(input_shape))
        self.bn.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        x = self.conv_kx1(self.conv_1xk(activation(x, self.settings)))
        return clip_if_bounded(self.bn(x, training=training), self.settings)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides}


@keras.saving.register_keras_serializable(package="improve_nas")
class DilatedConv(SettingsLayer):
    """``dil_conv_3x3`` (``separable=False``): ``activation → conv K×K, dilation 2 → BN``; ``dil_separable_KxK``
    (``separable=True``, DARTS' ``dil_conv``): ``activation → depthwise K×K, dilation 2 → pointwise 1×1 → BN``.

    With ``strides`` > 1 the conv runs at stride 1 and its output is subsampled (see the module docstring).

    Args:
        filters: Output channels.
        kernel_size: K.
        separable: Depthwise-separable instead of a full convolution.
        strides: Stride, applied by subsampling.
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, kernel_size: int, separable: bool, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.separable = separable
        self.strides = strides
        common = dict(padding="same", dilation_rate=DILATION, use_bias=False, data_format=self.settings.data_format,
                      name="conv", dtype=self.dtype_policy)
        regularizer = self.settings.regularizer()
        if separable:
            self.conv = keras.layers.SeparableConv2D(
                filters, kernel_size, depth_multiplier=1, depthwise_initializer=kernel_initializer(),
                pointwise_initializer=kernel_initializer(), depthwise_regularizer=regularizer,
                pointwise_regularizer=regularizer, **common)
        else:
            self.conv = Conv2D(filters, kernel_size, kernel_initializer=kernel_initializer(),
                               kernel_regularizer=regularizer, **common)
        self.bn = batch_norm(self.settings, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        x = _subsample(self.conv(activation(x, self.settings)), self.strides, self.settings)
        return clip_if_bounded(self.bn(x, training=training), self.settings)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "separable": self.separable, "strides": self.strides}
