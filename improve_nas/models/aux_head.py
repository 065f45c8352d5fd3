"""The NASNet auxiliary classifier, attached before the second reduction cell."""

from __future__ import annotations

import keras
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models.layers import SettingsLayer, activation, batch_norm, conv2d, dense

AUX_POOL_SIZE, AUX_POOL_STRIDES = 5, 3
AUX_PROJECTION_FILTERS, AUX_FEATURE_FILTERS = 128, 768


@keras.saving.register_keras_serializable(package="improve_nas")
class AuxHead(SettingsLayer):
    """The NASNet auxiliary classifier (docs/original_code.md §3.2).

    ``act → avg pool 5×5 /3 VALID → conv 1×1 128 → BN → act → conv k×k 768 VALID → BN →
    act → flatten → dense``, where k×k is the whole remaining map. On maps smaller than
    5 pixels per side the pool window shrinks to the map (the original would fail), so
    8×8 digits still get a head; at 32×32 inputs nothing changes.

    Args:
        num_classes: Logits width.
        settings: Shared block settings.
    """

    def __init__(self, *, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.projection = conv2d(AUX_PROJECTION_FILTERS, 1, self.settings, name="projection", dtype=self.dtype_policy)
        self.projection_bn = batch_norm(self.settings, name="projection_bn", dtype=self.dtype_policy)
        self.feature_bn = batch_norm(self.settings, name="feature_bn", dtype=self.dtype_policy)
        self.logits = dense(num_classes, self.settings, name="logits", dtype=self.dtype_policy)

    def build(self, input_shape):
        axes = self.settings.spatial_axes
        sizes = [input_shape[axis] for axis in axes]
        if any(size is None for size in sizes):
            raise UsageError(f"the aux head needs a known input size; got feature map shape {tuple(input_shape)}")
        pool = tuple(min(AUX_POOL_SIZE, size) for size in sizes)
        remaining = tuple((size - window) // AUX_POOL_STRIDES + 1 for size, window in zip(sizes, pool))
        self.pool = keras.layers.AveragePooling2D(
            pool, strides=AUX_POOL_STRIDES, padding="valid", data_format=self.settings.data_format, name="pool",
            dtype=self.dtype_policy,
        )
        self.features = conv2d(
            AUX_FEATURE_FILTERS, remaining, self.settings, padding="valid", name="features", dtype=self.dtype_policy
        )
        pooled = self.pool.compute_output_shape(input_shape)
        self.pool.build(input_shape)
        self.projection.build(pooled)
        projected = self.projection.compute_output_shape(pooled)
        self.projection_bn.build(projected)
        self.features.build(projected)
        self.feature_bn.build(self.features.compute_output_shape(projected))
        self.logits.build((input_shape[0], AUX_FEATURE_FILTERS))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def call(self, x, training=False):
        x = self.pool(activation(x, self.settings))
        x = activation(self.projection_bn(self.projection(x), training=training), self.settings)
        x = activation(self.feature_bn(self.features(x), training=training), self.settings)
        return self.logits(ops.squeeze(x, axis=self.settings.spatial_axes))  # the map is 1×1 here

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
