"""NASNet-A as Keras 3 layers: genotype, macro structure, ops, cells, the network, drop path.

More in test_models_sizes.py (other input sizes), test_models_portability.py (fit, save/load, NCHW, TF vs JAX)
and test_models_params.py (the parameter table of docs/original_code.md §3.10, summary).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models import NASNET_A_NORMAL, NASNET_A_REDUCTION, CellGenotype, NASNet
from improve_nas.models.architecture import plan_network, reduction_indices
from improve_nas.models.drop_path import DropPath
from improve_nas.models.initializers import FanOutTruncatedNormal
from improve_nas.models.layers import BlockSettings, FactorizedReduction
from improve_nas.models.ops import Identity, Pool, StackedSeparableConv

pytestmark = pytest.mark.multibackend


def numpy(x):
    return ops.convert_to_numpy(x)


def images(batch=2, height=8, width=8, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, channels)).astype("float32")


# Most tests share one input shape and model size: on JAX, eager ops compile once per shape and are then cached,
# so sharing shapes keeps the file fast.
X = images()


def tiny(**kwargs):
    """A 5-cell NASNet (3 normal, 2 reduction) of width 2; drop path off unless asked for."""
    args = dict(num_classes=3, num_cells=3, num_conv_filters=2, drop_path_keep_prob=1.0)
    return NASNet(**{**args, **kwargs})


# --- genotype and macro structure -------------------------------------------------------------------------------


def test_genotypes_concatenate_the_spec_states():
    assert NASNET_A_NORMAL.output_states == (1, 2, 3, 4, 5, 6)
    assert NASNET_A_REDUCTION.output_states == (3, 4, 5, 6)
    assert CellGenotype.from_config(json.loads(json.dumps(NASNET_A_REDUCTION.to_config()))) == NASNET_A_REDUCTION


@pytest.mark.parametrize(
    "change, message",
    [
        ({"operations": ("conv_9x9",) + NASNET_A_NORMAL.operations[1:]}, "conv_9x9"),
        ({"hiddenstate_indices": (0, 2) + NASNET_A_NORMAL.hiddenstate_indices[2:]}, "not built yet"),
        ({"used_hiddenstates": (1, 0, 0)}, "used_hiddenstates"),
    ],
)
def test_bad_genotype_is_a_usage_error(change, message):
    fields = {**NASNET_A_NORMAL.__dict__, **change}
    with pytest.raises(UsageError, match=message):
        CellGenotype(**fields)


@pytest.mark.parametrize("num_cells, expected", [(18, [6, 12]), (6, [2, 4]), (3, [1, 2])])
def test_reduction_cells_go_before_normal_cells_k_over_r_plus_1(num_cells, expected):
    assert reduction_indices(num_cells, 2) == expected


def _plan(**kwargs):
    args = dict(num_cells=6, num_conv_filters=10, stem_multiplier=3.0, filter_scaling_rate=2.0,
                num_reduction_layers=2, skip_reduction_layer_input=0, drop_path_keep_prob=0.6)
    return plan_network(**{**args, **kwargs})


def test_plan_widths_inputs_and_aux_position():
    plan = _plan()
    kinds = [cell.kind for cell in plan.cells]
    assert kinds == ["normal"] * 2 + ["reduction"] + ["normal"] * 2 + ["reduction"] + ["normal"] * 2
    assert [cell.filters for cell in plan.cells] == [10, 10, 20, 20, 20, 40, 40, 40]
    assert [cell.output_channels for cell in plan.cells] == [60, 60, 80, 120, 120, 160, 240, 240]
    assert plan.feature_channels == 24 * 10
    # Cell 0 gets the raw stem; the cell after a reduction reduces the pre-reduction output.
    assert [cell.prev_mode for cell in plan.cells] == ["net", "project", "project", "reduce", "project", "project",
                                                       "reduce", "project"]
    assert plan.cells[3].prev_source == 2  # normal cell 1's output, from before reduction cell 0
    assert plan.aux_head_after == 4  # normal cell 3: the last normal cell before the second reduction
    # Depth-scaled keep probability: 1 - (c + 1) / (num_cells + 2) * (1 - 0.6).
    assert [cell.drop_path_keep_prob for cell in plan.cells] == pytest.approx([1 - (c + 1) / 8 * 0.4 for c in range(8)])


def test_skip_reduction_layer_input_feeds_the_output_before_the_reduction_input():
    plan = _plan(skip_reduction_layer_input=1)
    assert plan.cells[3].net_source == 3 and plan.cells[3].prev_source == 1  # skips normal cell 1 (source 2)
    assert plan.cells[3].prev_mode == "reduce"


def test_too_few_cells_for_the_reductions_is_a_usage_error():
    with pytest.raises(UsageError, match="num_cells=1"):
        NASNet(num_classes=10, num_cells=1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"data_format": "NCWH"}, "data_format"),
        ({"num_cells": 0}, "num_cells"),
        ({"skip_reduction_layer_input": 2}, "skip_reduction_layer_input"),
        ({"drop_path_keep_prob": 0.0}, "drop_path_keep_prob"),
        ({"dense_dropout_keep_prob": 1.5}, "dense_dropout_keep_prob"),
        ({"total_training_steps": 0}, "total_training_steps"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_constructor_argument_is_a_usage_error_naming_it(kwargs, name):
    with pytest.raises(UsageError, match=name):
        NASNet(num_classes=10, **kwargs)


# --- layers and ops ---------------------------------------------------------------------------------------------


def test_initializer_is_truncated_normal_with_fan_out_stddev():
    for shape, fan_out in [((3, 3, 32, 64), 3 * 3 * 64), ((5, 5, 256, 1), 25), ((640, 100), 100)]:
        values = numpy(FanOutTruncatedNormal(seed=1)(shape))
        stddev = math.sqrt(1.3 * 2.0 / fan_out)
        assert np.abs(values).max() <= 2 * stddev
        # A normal truncated at ±2σ has standard deviation 0.8796σ.
        assert values.std() == pytest.approx(0.8796 * stddev, rel=0.03)
    first, second = (numpy(FanOutTruncatedNormal()((8, 8))) for _ in range(2))
    assert not np.allclose(first, second), "unseeded instances must not repeat each other"


def _settings(**kwargs):
    return BlockSettings(**kwargs)


@pytest.mark.parametrize("strides", [1, 2])
def test_every_operation_maps_to_filters_channels_and_strides(strides):
    x = images(height=7, width=6, channels=3)
    layers = [
        StackedSeparableConv(filters=5, kernel_size=k, strides=strides, settings=_settings()) for k in (3, 5, 7)
    ] + [
        Pool(kind=kind, filters=5, input_channels=3, strides=strides, settings=_settings()) for kind in ("avg", "max")
    ] + [Identity(filters=5, input_channels=3, strides=strides, settings=_settings())]
    expected = (2, -(-7 // strides), -(-6 // strides), 5)
    for layer in layers:
        assert tuple(layer(x).shape) == expected, layer.name
        assert tuple(layer.compute_output_shape(x.shape)) == expected, layer.name


def test_identity_is_exact_without_stride_or_width_change():
    x = images(channels=4)
    layer = Identity(filters=4, input_channels=4, strides=1, settings=_settings())
    assert np.array_equal(numpy(layer(x)), x) and not layer.weights


def test_average_pool_excludes_padding_from_the_mean():
    pool = Pool(kind="avg", filters=1, input_channels=1, strides=1, settings=_settings())
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    y = numpy(pool(x))[0, :, :, 0]
    assert y[0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))  # 4 real cells, not 9 with zeros
    assert y[1, 1] == pytest.approx(np.mean(x[0, :3, :3, 0]))
    assert numpy(pool(np.ones((1, 5, 5, 1), "float32"))) == pytest.approx(1.0)


def test_factorized_reduction_reads_even_then_odd_pixels():
    layer = FactorizedReduction(filters=5, strides=2, settings=_settings())
    x = np.zeros((1, 6, 6, 1), "float32")
    x[:, 1::2, 1::2, :] = 1.0  # odd pixels only
    y = numpy(layer(x, training=False))  # fresh BN at inference is ~identity
    assert y.shape == (1, 3, 3, 5)
    assert np.all(y[..., :2] == 0.0)  # the even path (5 // 2 channels) sees only zeros
    assert np.all(np.abs(y[..., 2:]).sum(axis=-1) > 0)  # the odd path (5 // 2 + 1 channels) sees them


def test_reduction_cell_strides_only_ops_that_read_the_cell_inputs():
    model = tiny()
    reduction = model.cells[1]
    assert [op.strides for op in reduction.operations] == [2, 2, 2, 2, 2, 2, 1, 1, 1, 2]
    assert all(op.strides == 1 for op in model.cells[0].operations)


def test_drop_path_keeps_the_mean_and_is_identity_at_inference():
    layer = DropPath(seed=3)
    x = np.ones((40000, 1, 1, 1), "float32")
    y = numpy(layer(x, keep_prob=0.7, training=True))
    assert np.all(np.isclose(y, 0.0) | np.isclose(y, 1 / 0.7))  # whole examples dropped, survivors rescaled
    # Mean 1 ± 0.02: the standard error is sqrt(0.3 / 0.7 / 40000) ≈ 0.003, and no rescaling would give 0.7.
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    assert (y == 0).mean() == pytest.approx(0.3, abs=0.02)
    assert np.array_equal(numpy(layer(x, keep_prob=0.7, training=False)), x)


# --- the network ------------------------------------------------------------------------------------------------


def test_cells_output_six_f_normal_and_four_f_reduction_channels():
    model = tiny()
    model(X)
    net = model.stem_bn(model.stem_conv(X))
    outputs = [net]
    for spec, cell in zip(model.plan.cells, model.cells):
        prev = outputs[spec.net_source] if spec.prev_source is None else outputs[spec.prev_source]
        outputs.append(cell(outputs[spec.net_source], prev))
        factor = 6 if spec.kind == "normal" else 4
        size = 8 // 2 ** spec.level
        assert tuple(outputs[-1].shape) == (2, size, size, factor * spec.filters)
    assert [tuple(o.shape)[-1] for o in outputs[1:]] == [12, 16, 24, 32, 48]


def test_inference_returns_logits_and_features_only():
    outputs = tiny()(X)
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {"logits": (2, 3), "features": (2, 48)}
    assert all(value.dtype == "float32" for value in outputs.values())


def test_no_aux_head_without_a_second_reduction_or_when_disabled():
    assert not tiny(num_reduction_layers=1).has_aux_head
    model = tiny(use_aux_head=False)
    assert not model.has_aux_head and not hasattr(model, "aux_head")
    assert set(model(X, training=True)) == {"logits", "features"}


def test_weight_decay_is_half_l2_on_kernels_only():
    model = NASNet(num_classes=3, num_cells=1, num_reduction_layers=0, num_conv_filters=2, weight_decay=1e-2)
    model.build((None, 8, 8, 1))
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    assert len(model.losses) == len(kernels) > 0
    expected = 1e-2 / 2 * sum(float(np.sum(numpy(w) ** 2)) for w in kernels)
    assert float(sum(numpy(loss) for loss in model.losses)) == pytest.approx(expected, rel=1e-5)
    assert not tiny(weight_decay=0.0).losses


def test_bounded_activation_clips_every_op_and_the_features():
    x = images(channels=3) * 1000.0
    settings = _settings(bounded_activation=True)
    for layer in (
        StackedSeparableConv(filters=4, kernel_size=3, settings=settings),
        Pool(kind="max", filters=4, input_channels=3, settings=settings),
        Identity(filters=4, input_channels=3, settings=settings),
    ):
        assert np.abs(numpy(layer(x))).max() <= 6.0, layer.name
    unbounded, bounded = tiny(), tiny(use_bounded_activation=True)
    unbounded.build(X.shape)
    bounded.build(X.shape)
    bounded.set_weights(unbounded.get_weights())
    assert numpy(unbounded(X * 1000.0)["features"]).max() > 6.0  # the input really is out of range
    features = numpy(bounded(X * 1000.0)["features"])
    assert features.min() >= 0.0 and features.max() <= 6.0


def test_drop_path_ramps_from_keep_one_at_step_zero():
    # At step 0 the keep probability is 1, so training output equals a model without drop path.
    plain, dropping = tiny(drop_path_keep_prob=1.0), tiny(drop_path_keep_prob=0.3, total_training_steps=1)
    plain.build(X.shape)
    dropping.build(X.shape)
    dropping.set_weights(plain.get_weights())  # same layers and weights: drop path adds none
    assert int(numpy(dropping.training_step.value)) == 0
    np.testing.assert_allclose(numpy(plain(X, training=True)["logits"]), numpy(dropping(X, training=True)["logits"]),
                               atol=1e-5)
    # Step 1 of 1: fully ramped, keep probabilities 0.3 to 0.86 over ~40 paths per example: the output changes.
    assert int(numpy(dropping.training_step.value)) == 1
    assert not np.allclose(numpy(plain(X, training=True)["logits"]), numpy(dropping(X, training=True)["logits"]),
                           atol=1e-3)
    assert int(numpy(dropping.training_step.value)) == 2
    dropping(X)  # inference leaves the counter alone
    assert int(numpy(dropping.training_step.value)) == 2
    assert not any(hasattr(cell, "drop_path") for cell in plain.cells)  # keep 1.0: no random draws at all
