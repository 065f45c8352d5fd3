"""Ensemblers, strategies and the persisted records of the AdaNet engine."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from improve_nas.adanet import (
    AllStrategy,
    Builder,
    ComplexityRegularizedEnsembler,
    EnsembleRecord,
    EnsemblerSpec,
    GrowStrategy,
    MeanEnsembler,
    MemberRecord,
    SoloStrategy,
    make_strategy,
    restore_ensembler,
    serialize_ensembler,
)
from improve_nas.errors import UsageError

pytestmark = pytest.mark.multibackend

K = 4


def _np(x):
    return keras.ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x)


def _logits(seed=0, batch=5):
    return np.random.default_rng(seed).normal(size=(batch, K)).astype("float32")


@pytest.mark.parametrize("make", [
    lambda n: MeanEnsembler(num_members=n),
    lambda n: ComplexityRegularizedEnsembler(num_members=n, num_classes=K, weight_type="scalar"),
    lambda n: ComplexityRegularizedEnsembler(num_members=n, num_classes=K, weight_type="vector"),
])
@pytest.mark.parametrize("n", [1, 3])
def test_ensemble_of_identical_members_equals_the_member(make, n):
    z = _logits()
    np.testing.assert_allclose(_np(make(n)([z] * n)), z, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weight_type, shapes, value", [
    ("scalar", [(), ()], 0.5),
    ("vector", [(K,), (K,)], 0.5),
    ("matrix", [(3, K), (7, K)], 0.0),
])
def test_mixture_weight_shapes_and_initial_values(weight_type, shapes, value):
    ens = ComplexityRegularizedEnsembler(num_members=2, num_classes=K, feature_dims=[3, 7], weight_type=weight_type)
    assert [tuple(w.shape) for w in ens.mixture_weights] == shapes
    for w in ens.mixture_weights:
        np.testing.assert_array_equal(_np(w), np.full(w.shape, value, "float32"))
    assert ens.bias is None and len(ens.weights) == 2


def test_matrix_weights_map_features_and_ignore_logits():
    ens = ComplexityRegularizedEnsembler(num_members=2, num_classes=K, feature_dims=[3, 2], weight_type="matrix")
    features = [np.ones((5, 3), "float32"), np.ones((5, 2), "float32")]
    np.testing.assert_array_equal(_np(ens([_logits(1), _logits(2)], features)), np.zeros((5, K)))
    ens.mixture_weights[0].assign(np.ones((3, K), "float32"))
    ens.mixture_weights[1].assign(2 * np.ones((2, K), "float32"))
    np.testing.assert_allclose(_np(ens([_logits(1), _logits(2)], features)), np.full((5, K), 3.0 + 4.0))


def test_bias_is_added_and_initialised_to_zero():
    ens = ComplexityRegularizedEnsembler(num_members=1, num_classes=K, use_bias=True)
    np.testing.assert_array_equal(_np(ens.bias), np.zeros(K))
    ens.bias.assign(np.arange(K, dtype="float32"))
    z = _logits()
    np.testing.assert_allclose(_np(ens([z])), z + np.arange(K), rtol=1e-6)


def test_complexity_penalty_value():
    ens = ComplexityRegularizedEnsembler(num_members=2, num_classes=K, complexities=[1.0, 3.0],
                                         weight_type="vector", adanet_lambda=0.5, adanet_beta=0.25)
    ens.mixture_weights[0].assign(np.array([1, -2, 0, 1], "float32"))  # ‖w‖₁ = 4
    ens.mixture_weights[1].assign(np.array([0.5, 0.5, -1, 0], "float32"))  # ‖w‖₁ = 2
    expected = (0.5 * 1 + 0.25) * 4 + (0.5 * 3 + 0.25) * 2
    assert float(_np(ens.complexity_penalty())) == pytest.approx(expected)


def test_penalty_is_zero_by_default_and_for_mean():
    assert float(_np(ComplexityRegularizedEnsembler(num_members=3, num_classes=K).complexity_penalty())) == 0.0
    assert float(_np(MeanEnsembler(num_members=3).complexity_penalty())) == 0.0


def test_unknown_weight_type_is_a_usage_error():
    with pytest.raises(UsageError, match="'diagonal'.*scalar, vector, matrix"):
        ComplexityRegularizedEnsembler(num_members=1, num_classes=K, weight_type="diagonal")
    with pytest.raises(UsageError, match="'diagonal'"):
        EnsemblerSpec(weight_type="diagonal")
    with pytest.raises(UsageError, match="'median'.*complexity_regularized, mean"):
        EnsemblerSpec(kind="median")


def test_spec_builds_trainable_only_when_learning():
    fixed = EnsemblerSpec().build(num_members=2, num_classes=K, feature_dims=None, complexities=[1, 1])
    learned = EnsemblerSpec(learn_mixture_weights=True).build(
        num_members=2, num_classes=K, feature_dims=None, complexities=[1, 1])
    assert (len(fixed.trainable_weights), len(learned.trainable_weights)) == (0, 2)
    mean = EnsemblerSpec(kind="mean").build(num_members=2, num_classes=K, feature_dims=None, complexities=[1, 1])
    assert isinstance(mean, MeanEnsembler)


def test_serialized_ensembler_restores_config_and_weights_frozen():
    ens = ComplexityRegularizedEnsembler(num_members=2, num_classes=K, weight_type="vector", adanet_beta=0.1)
    ens.mixture_weights[1].assign(np.arange(K, dtype="float32"))
    data = json.loads(json.dumps(serialize_ensembler(ens)))
    restored = restore_ensembler(data)
    assert restored.weight_type == "vector" and restored.adanet_beta == 0.1 and not restored.trainable
    z1, z2 = _logits(1), _logits(2)
    np.testing.assert_allclose(_np(restored([z1, z2])), _np(ens([z1, z2])), rtol=1e-6)


class _Named(Builder):
    def __init__(self, name):
        self._name = name

    @property
    def name(self):
        return self._name

    def build_subnetwork(self, *, num_classes, input_shape):
        raise NotImplementedError


def _record(num_members=2):
    members = tuple(MemberRecord(name=f"t{i}_m", iteration=i, builder_name="m", shared={"cells": 3 + i})
                    for i in range(num_members))
    return EnsembleRecord(name="t1_m_grow", iteration=1, members=members, ensembler={"config": {}, "weights": []},
                          adanet_loss_ema=0.5)


def test_strategies_form_the_documented_candidates():
    builders, previous = [_Named("a"), _Named("b")], _record(2)
    grow = GrowStrategy().generate_ensemble_candidates(builders, previous)
    assert [(c.name, c.builder_names, c.previous_members) for c in grow] == [
        ("a_grow", ("a",), (0, 1)), ("b_grow", ("b",), (0, 1))]
    assert [c.previous_members for c in GrowStrategy().generate_ensemble_candidates(builders, None)] == [(), ()]
    solo = SoloStrategy().generate_ensemble_candidates(builders, previous)
    assert [(c.name, c.previous_members) for c in solo] == [("a_solo", ()), ("b_solo", ())]
    (everything,) = AllStrategy().generate_ensemble_candidates(builders, previous)
    assert (everything.name, everything.builder_names, everything.previous_members) == ("all", ("a", "b"), (0, 1))


def test_make_strategy_names():
    assert isinstance(make_strategy("Grow"), GrowStrategy)
    with pytest.raises(UsageError, match="'best'.*grow, solo, all"):
        make_strategy("best")


def test_records_round_trip_through_json():
    record = _record(3)
    again = EnsembleRecord.from_json(record.to_json())
    assert again == record and again.members[2].shared == {"cells": 5}
    assert EnsembleRecord.from_json(json.dumps({**record.to_dict(), "adanet_loss_ema": None})).adanet_loss_ema is None


def test_member_record_from_builder():
    record = MemberRecord.from_builder(_Named("deeper"), iteration=2)
    assert (record.name, record.builder_name, record.complexity, record.shared) == ("t2_deeper", "deeper", 1.0, {})
