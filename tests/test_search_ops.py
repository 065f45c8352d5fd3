"""The search space's operations beyond NASNet-A (their layers in improve_nas/models/search_ops.py and ops.py, built by
`ops.make_operation`): shapes at stride 1 and 2 with SAME padding, finite outputs, config round trip, .keras
save/load, and one-line errors for unknown names."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models import genotype
from improve_nas.models.layers import BlockSettings
from improve_nas.models.ops import make_operation
from improve_nas.search.space import OPERATIONS

ALL_OPERATIONS = genotype.KNOWN_OPERATIONS
NASNET_A_OPERATIONS = set(genotype.NASNET_A_NORMAL.operations) | set(genotype.NASNET_A_REDUCTION.operations)
SEARCH_OPERATIONS = tuple(op for op in ALL_OPERATIONS if op not in NASNET_A_OPERATIONS)

pytestmark = pytest.mark.multibackend

SETTINGS = BlockSettings(weight_decay=1e-4)
X = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 4)).astype("float32")
X_ODD = np.random.default_rng(1).uniform(-1, 1, (2, 7, 7, 4)).astype("float32")
FILTERS = 6


def build(operation, strides=1, input_shape=X.shape, **kwargs):
    layer = make_operation(operation, filters=FILTERS, input_channels=input_shape[-1], strides=strides,
                                  settings=SETTINGS, name=operation, **kwargs)
    layer.build(input_shape)
    return layer


def test_every_operation_of_the_space_has_a_layer():
    assert ALL_OPERATIONS == tuple(OPERATIONS)  # the same names, in the order the canonical hash sorts by
    assert len(SEARCH_OPERATIONS) == 9 and len(NASNET_A_OPERATIONS) == 6
    for operation in ALL_OPERATIONS:
        assert isinstance(make_operation(operation, filters=4), keras.layers.Layer), operation


@pytest.mark.parametrize("operation", SEARCH_OPERATIONS)
def test_shapes_at_stride_one_and_two_with_same_padding_and_finite_outputs(operation):
    for strides, x, side in ((1, X, 8), (2, X, 4), (2, X_ODD, 4)):
        layer = build(operation, strides, x.shape)
        y = ops.convert_to_numpy(layer(x, training=True))
        assert y.shape == (2, side, side, FILTERS) == layer.compute_output_shape(x.shape), (strides, x.shape)
        assert np.isfinite(y).all()
        assert layer.losses, "weight decay on the kernels"


@pytest.mark.parametrize("operation", ["dil_conv_3x3", "dil_separable_3x3", "dil_separable_5x5"])
def test_strided_dilated_op_is_the_stride_one_op_subsampled(operation):
    dense, strided = build(operation, 1), build(operation, 2)
    strided.set_weights(dense.get_weights())
    full = ops.convert_to_numpy(dense(X))
    np.testing.assert_allclose(ops.convert_to_numpy(strided(X)), full[:, ::2, ::2, :], rtol=1e-5, atol=1e-5)


def test_factorized_conv_has_the_weights_of_a_1xk_then_kx1_conv():
    layer = build("conv_1x7_7x1", 2)
    kernels = sorted(tuple(w.shape) for w in layer.trainable_weights if len(w.shape) == 4)
    assert kernels == [(1, 7, 4, FILTERS), (7, 1, FILTERS, FILTERS)]


def test_max_pool_window_is_its_size():
    x = np.zeros((1, 7, 7, 1), "float32")
    x[0, 0, 0, 0] = 1.0  # a 5x5 SAME window reaches it from (0..2, 0..2), a 7x7 one from (0..3, 0..3)
    for operation, reach in (("max_pool_5x5", 3), ("max_pool_7x7", 4)):
        y = ops.convert_to_numpy(make_operation(operation, filters=1, settings=SETTINGS)(x))[0, :, :, 0]
        assert y[:reach, :reach].min() == 1.0 and y.sum() == reach * reach, operation


def test_bounded_activation_clips_every_search_operation():
    settings = BlockSettings(bounded_activation=True)
    for operation in SEARCH_OPERATIONS:
        layer = make_operation(operation, filters=FILTERS, input_channels=4, settings=settings)
        y = ops.convert_to_numpy(layer(X * 1000.0, training=True))
        assert np.abs(y).max() <= 6.0 + 1e-5, operation


@pytest.mark.parametrize("operation", SEARCH_OPERATIONS)
def test_config_round_trip_gives_the_same_outputs_for_the_same_weights(operation):
    layer = build(operation, 2)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build(X.shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    assert type(keras.layers.deserialize(keras.layers.serialize(layer))) is type(layer)  # registered by name
    np.testing.assert_allclose(ops.convert_to_numpy(clone(X)), ops.convert_to_numpy(layer(X)), rtol=1e-6, atol=1e-6)


def test_save_and_load_through_a_keras_file(tmp_path):
    inputs = keras.Input(X.shape[1:])
    outputs = [make_operation(op, filters=FILTERS, input_channels=4, strides=2, settings=SETTINGS, name=op)(
        inputs) for op in SEARCH_OPERATIONS]
    model = keras.Model(inputs, outputs)
    path = tmp_path / "ops.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for before, after in zip(model.predict(X, verbose=0), loaded.predict(X, verbose=0)):
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_unknown_operation_is_a_one_line_usage_error_listing_the_valid_ones():
    with pytest.raises(UsageError) as error:
        make_operation("conv_9x9", filters=4)
    message = str(error.value)
    assert "\n" not in message and "'conv_9x9'" in message
    assert all(operation in message for operation in ALL_OPERATIONS)


def test_nasnet_a_operations_have_their_nasnet_a_layers():
    from improve_nas.models.ops import Pool, StackedSeparableConv

    assert isinstance(make_operation("separable_3x3_2", filters=4), StackedSeparableConv)
    assert isinstance(make_operation("max_pool_3x3", filters=4, input_channels=2), Pool)


def test_channels_first_gives_the_channels_last_outputs_for_the_same_weights():
    first = BlockSettings(data_format="channels_first")
    for operation in SEARCH_OPERATIONS:
        nchw = make_operation(operation, filters=FILTERS, input_channels=4, strides=2, settings=first)
        y = ops.convert_to_numpy(nchw(np.transpose(X_ODD, (0, 3, 1, 2))))
        nhwc = build(operation, 2, X_ODD.shape)
        nhwc.set_weights(nchw.get_weights())
        np.testing.assert_allclose(np.transpose(y, (0, 2, 3, 1)), ops.convert_to_numpy(nhwc(X_ODD)), atol=1e-5,
                                   err_msg=operation)
