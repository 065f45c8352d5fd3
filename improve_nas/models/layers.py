"""Building blocks shared by the NASNet ops, cells and heads (backend-agnostic Keras 3).

Every convolution and dense kernel here follows the TF-slim NASNet CIFAR arg scope
(docs/original_code.md §3.6): truncated-normal fan-out initialisation with stddev
``sqrt(1.3 * 2 / fan_out)``, no bias on convolutions, and an L2 penalty of
``weight_decay * sum(w**2) / 2`` (Keras ``L2(weight_decay / 2)``) on conv, depthwise,
pointwise and dense kernels only. Batch norm uses momentum 0.9 and epsilon 1e-5.
"""

from __future__ import annotations

import dataclasses
import functools

import keras
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models.initializers import kernel_initializer

DATA_FORMATS = ("channels_last", "channels_first")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
BOUNDED_ACTIVATION_CAP = 6.0


@dataclasses.dataclass(frozen=True)
class BlockSettings:
    """What every block needs to know besides its own shape.

    Attributes:
        data_format: Keras data format the network runs in internally.
        weight_decay: L2 scale; the penalty is ``weight_decay * sum(w**2) / 2`` per kernel.
        bounded_activation: ReLU6 instead of ReLU, plus ±6 clipping (docs/original_code.md §3.9).
    """

    data_format: str = "channels_last"
    weight_decay: float = 5e-4
    bounded_activation: bool = False

    def __post_init__(self):
        if self.data_format not in DATA_FORMATS:
            raise UsageError(f"data_format={self.data_format!r} is invalid; valid: {', '.join(DATA_FORMATS)}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay={self.weight_decay} must be >= 0")

    @classmethod
    def coerce(cls, value: BlockSettings | dict) -> BlockSettings:
        """Accepts an instance or its `dataclasses.asdict` form (from a layer config)."""
        return value if isinstance(value, cls) else cls(**value)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def regularizer(self) -> keras.regularizers.Regularizer | None:
        # Keras L2(l) is l * sum(w**2); slim's l2_regularizer(wd) is wd * sum(w**2) / 2.
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay else None


@functools.cache
def _channels_first_conv_needs_transpose() -> bool:
    # TensorFlow's Conv2D kernel has no NCHW implementation on CPU ("The Conv2D op
    # currently only supports the NHWC tensor format on the CPU"); Keras already
    # transposes around depthwise/separable convs and pooling there, but not plain conv.
    if keras.config.backend() != "tensorflow":
        return False
    return all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())


@keras.saving.register_keras_serializable(package="improve_nas")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that also runs channels-first on TensorFlow without a GPU.

    There it transposes to channels-last around the convolution; everywhere else it is
    exactly the Keras layer.
    """

    def convolution_op(self, inputs, kernel):
        if self.data_format == "channels_first" and _channels_first_conv_needs_transpose():
            outputs = ops.conv(
                ops.transpose(inputs, (0, 2, 3, 1)),
                kernel,
                strides=list(self.strides),
                padding=self.padding,
                dilation_rate=self.dilation_rate,
                data_format="channels_last",
            )
            return ops.transpose(outputs, (0, 3, 1, 2))
        return super().convolution_op(inputs, kernel)


def conv2d(filters: int, kernel_size, settings: BlockSettings, *, strides=1, padding="same", name=None,
           dtype=None) -> Conv2D:
    """A bias-free convolution with the NASNet initializer and L2."""
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        data_format=settings.data_format,
        kernel_initializer=kernel_initializer(),
        kernel_regularizer=settings.regularizer(),
        name=name,
        dtype=dtype,
    )


def separable_conv2d(filters: int, kernel_size: int, settings: BlockSettings, *, strides=1, name=None, dtype=None):
    """Depthwise k×k (multiplier 1) then pointwise 1×1, no bias, nothing in between."""
    return keras.layers.SeparableConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        depth_multiplier=1,
        use_bias=False,
        data_format=settings.data_format,
        depthwise_initializer=kernel_initializer(),
        pointwise_initializer=kernel_initializer(),
        depthwise_regularizer=settings.regularizer(),
        pointwise_regularizer=settings.regularizer(),
        name=name,
        dtype=dtype,
    )


def dense(units: int, settings: BlockSettings, *, name=None, dtype=None) -> keras.layers.Dense:
    """Fully connected logits layer: NASNet initializer and L2 on the kernel, zero bias."""
    return keras.layers.Dense(
        units,
        kernel_initializer=kernel_initializer(),
        bias_initializer="zeros",
        kernel_regularizer=settings.regularizer(),
        name=name,
        dtype=dtype,
    )


def batch_norm(settings: BlockSettings, *, name=None, dtype=None) -> keras.layers.BatchNormalization:
    """Batch norm; under a mixed policy Keras keeps its statistics and arithmetic in float32."""
    return keras.layers.BatchNormalization(
        axis=settings.channel_axis, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name, dtype=dtype
    )


def activation(x, settings: BlockSettings):
    """ReLU, or ReLU6 with bounded activations."""
    return ops.relu6(x) if settings.bounded_activation else ops.relu(x)


def clip_if_bounded(x, settings: BlockSettings):
    if settings.bounded_activation:
        return ops.clip(x, -BOUNDED_ACTIVATION_CAP, BOUNDED_ACTIVATION_CAP)
    return x


class SettingsLayer(keras.layers.Layer):
    """Base for blocks configured by `BlockSettings`; serialises them in `get_config`."""

    def __init__(self, *, settings: BlockSettings | dict, **kwargs):
        super().__init__(**kwargs)
        self.settings = BlockSettings.coerce(settings)

    # Subclasses build their sublayers from shapes (`build` + `compute_output_shape`):
    # Keras' default would trace `call` at every nesting level instead, which makes
    # building an 18-cell NASNet take tens of seconds.

    def output_shape_for(self, input_shape, *, channels: int, strides: int = 1) -> tuple:
        """``input_shape`` with ``channels`` channels and SAME-padded ``strides``."""
        shape = list(input_shape)
        for axis in self.settings.spatial_axes:
            if shape[axis] is not None:
                shape[axis] = -(-shape[axis] // strides)
        shape[self.settings.channel_axis] = channels
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "settings": dataclasses.asdict(self.settings)}


@keras.saving.register_keras_serializable(package="improve_nas")
class ReluConvBN(SettingsLayer):
    """``activation → conv k×k → BN`` (the NASNet cell base and 1×1 projections).

    Args:
        filters: Output channels.
        kernel_size: Convolution size.
        strides: Convolution stride.
        clip_output: Clip the result to ±6 when activations are bounded (used by the
            ``none`` op's projection, docs/original_code.md §3.9).
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, kernel_size: int = 1, strides: int = 1, clip_output: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.clip_output = clip_output
        self.conv = conv2d(filters, kernel_size, self.settings, strides=strides, name="conv", dtype=self.dtype_policy)
        self.bn = batch_norm(self.settings, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def call(self, x, training=False):
        x = self.bn(self.conv(activation(x, self.settings)), training=training)
        return clip_if_bounded(x, self.settings) if self.clip_output else x

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "clip_output": self.clip_output,
        }


@keras.saving.register_keras_serializable(package="improve_nas")
class FactorizedReduction(SettingsLayer):
    """Maps ``x`` to ``filters`` channels, halving the resolution when ``strides`` is 2.

    Stride 1 is ``conv 1×1 → BN``. Stride 2 concatenates two half-width 1×1 convs, one
    on the even pixels and one on the odd pixels (the map shifted up-left by one, zero
    padded at the bottom/right), then applies BN; no pixel is skipped by both paths.
    No activation: callers apply one where the original does.

    Args:
        filters: Output channels; an odd count gives the extra channel to the second path.
        strides: 1 or 2.
        settings: Shared block settings.
    """

    def __init__(self, *, filters: int, strides: int, **kwargs):
        super().__init__(**kwargs)
        if strides not in (1, 2):
            raise UsageError(f"factorized reduction stride {strides} is invalid; valid: 1, 2")
        self.filters = filters
        self.strides = strides
        if strides == 1:
            self.conv = conv2d(filters, 1, self.settings, name="conv", dtype=self.dtype_policy)
        else:
            self.even_conv = conv2d(filters // 2, 1, self.settings, name="even_conv", dtype=self.dtype_policy)
            self.odd_conv = conv2d(
                filters // 2 + filters % 2, 1, self.settings, name="odd_conv", dtype=self.dtype_policy
            )
        self.bn = batch_norm(self.settings, name="bn", dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.strides == 1:
            self.conv.build(input_shape)
        else:
            half = self.output_shape_for(input_shape, channels=input_shape[self.settings.channel_axis], strides=2)
            self.even_conv.build(half)
            self.odd_conv.build(half)
        self.bn.build(self.compute_output_shape(input_shape))

    def compute_output_shape(self, input_shape):
        return self.output_shape_for(input_shape, channels=self.filters, strides=self.strides)

    def call(self, x, training=False):
        if self.strides == 1:
            return self.bn(self.conv(x), training=training)
        if self.settings.data_format == "channels_last":
            shifted = ops.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
            even, odd = x[:, ::2, ::2, :], shifted[:, ::2, ::2, :]
        else:
            shifted = ops.pad(x, [[0, 0], [0, 0], [0, 1], [0, 1]])[:, :, 1:, 1:]
            even, odd = x[:, :, ::2, ::2], shifted[:, :, ::2, ::2]
        paths = [self.even_conv(even), self.odd_conv(odd)]
        return self.bn(ops.concatenate(paths, axis=self.settings.channel_axis), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}
