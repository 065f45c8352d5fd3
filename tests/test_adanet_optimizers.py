"""Optimizers of the AdaNet engine: TF1 update rules, restarting cosine, per-group clipping."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from improve_nas.adanet.optimizers import OPTIMIZER_NAMES, make_optimizer
from improve_nas.errors import UsageError

pytestmark = pytest.mark.multibackend


def _np(x):
    return keras.ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x)


def _lr(optimizer) -> float:
    return float(_np(optimizer.learning_rate))


def _step(optimizer, variables, grads):
    optimizer.apply([keras.ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads], variables)


def _var(value):
    return keras.Variable(np.asarray(value, "float32"))


def test_cosine_schedule_reaches_zero_at_T_and_restarts_with_a_fresh_optimizer():
    lr0, steps = 0.1, 4
    optimizer = make_optimizer("sgd", learning_rate=lr0, schedule="cosine", decay_steps=steps)
    w = _var([0.0])
    seen = []
    for _ in range(steps + 2):
        seen.append(_lr(optimizer))
        before = float(_np(w)[0])
        _step(optimizer, [w], [[1.0]])
        assert before - float(_np(w)[0]) == pytest.approx(seen[-1], abs=1e-7)  # the step used lr_k
    expected = [lr0 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)) for k in range(steps + 2)]
    np.testing.assert_allclose(seen, expected, atol=1e-7)
    assert seen[0] == pytest.approx(lr0) and seen[steps] == pytest.approx(0.0, abs=1e-7)
    fresh = make_optimizer("sgd", learning_rate=lr0, schedule="cosine", decay_steps=steps)
    assert _lr(fresh) == pytest.approx(lr0)


def test_constant_schedule():
    optimizer = make_optimizer("sgd", learning_rate=0.3)
    _step(optimizer, [_var([0.0])], [[1.0]])
    assert _lr(optimizer) == pytest.approx(0.3)


def test_tf1_momentum_matches_the_formula_under_a_changing_learning_rate():
    # lr_0 = 0.1, lr_1 = 0.05 (cosine, T = 2). TF1: a ← 0.9a + g; w ← w − lr·a.
    optimizer = make_optimizer("momentum", learning_rate=0.1, schedule="cosine", decay_steps=2)
    w = _var([1.0])
    _step(optimizer, [w], [[1.0]])  # a = 1, w = 1 − 0.1·1
    assert float(_np(w)[0]) == pytest.approx(0.9, abs=1e-6)
    _step(optimizer, [w], [[2.0]])  # a = 0.9 + 2 = 2.9, w = 0.9 − 0.05·2.9 (Keras SGD would give 0.71)
    assert float(_np(w)[0]) == pytest.approx(0.755, abs=1e-6)


def test_rmsprop_starts_its_mean_square_at_one_like_tf1():
    optimizer = make_optimizer("rmsprop", learning_rate=0.1)
    w = _var([1.0])
    _step(optimizer, [w], [[2.0]])
    mean_square = 0.9 * 1.0 + 0.1 * 4.0
    assert float(_np(w)[0]) == pytest.approx(1.0 - 0.1 * 2.0 / math.sqrt(mean_square + 1e-10), abs=1e-6)


def test_adagrad_starts_its_accumulator_at_point_one():
    optimizer = make_optimizer("adagrad", learning_rate=0.1)
    w = _var([1.0])
    _step(optimizer, [w], [[2.0]])
    assert float(_np(w)[0]) == pytest.approx(1.0 - 0.1 * 2.0 / math.sqrt(0.1 + 4.0), abs=1e-6)


def test_adam_hyperparameters():
    for name in ("Adam", "LAZY_ADAM"):
        optimizer = make_optimizer(name, learning_rate=0.001)
        assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-8)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_optimizer_takes_a_step(name):
    optimizer = make_optimizer(name, learning_rate=0.1, schedule="cosine", decay_steps=10, clip_norm=5)
    w = _var([1.0, -1.0])
    optimizer.set_clip_groups([[w]])
    _step(optimizer, [w], [[1.0, -1.0]])
    assert float(_np(w)[0]) < 1.0 and float(_np(w)[1]) > -1.0


def test_bad_names_are_usage_errors():
    with pytest.raises(UsageError, match="'nadam'.*adagrad, adam, lazy_adam, momentum, rmsprop, sgd"):
        make_optimizer("nadam", learning_rate=0.1)
    with pytest.raises(UsageError, match="'linear'.*constant, cosine"):
        make_optimizer("sgd", learning_rate=0.1, schedule="linear")
    with pytest.raises(UsageError, match="decay_steps"):
        make_optimizer("sgd", learning_rate=0.1, schedule="cosine")


def test_clipping_is_per_group_and_leaves_ungrouped_variables_alone():
    a1, a2, b, mixture = _var([0.0, 0.0]), _var([0.0]), _var([0.0, 0.0]), _var([0.0])
    optimizer = make_optimizer("sgd", learning_rate=1.0, clip_norm=1.0, clip_groups=[[a1, a2], [b]])
    # Group a: global norm of [3, 0] and [4] is 5 → scaled by 1/5. Group b: norm 0.5 ≤ 1 → unchanged.
    _step(optimizer, [a1, a2, b, mixture], [[3.0, 0.0], [4.0], [0.3, 0.4], [100.0]])
    np.testing.assert_allclose(_np(a1), [-0.6, 0.0], atol=1e-6)
    np.testing.assert_allclose(_np(a2), [-0.8], atol=1e-6)
    np.testing.assert_allclose(_np(b), [-0.3, -0.4], atol=1e-6)
    np.testing.assert_allclose(_np(mixture), [-100.0], atol=1e-4)


def test_no_clipping_without_clip_norm():
    w = _var([0.0])
    optimizer = make_optimizer("sgd", learning_rate=1.0, clip_norm=0, clip_groups=[[w]])
    _step(optimizer, [w], [[50.0]])
    np.testing.assert_allclose(_np(w), [-50.0])


def test_a_variable_in_two_groups_is_rejected():
    w = _var([0.0])
    with pytest.raises(ValueError, match="two clip groups"):
        make_optimizer("sgd", learning_rate=1.0, clip_norm=1.0, clip_groups=[[w], [w]])


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="stateless_apply is the JAX trainer's path")
def test_clipping_applies_through_stateless_apply():
    a, mixture = _var([0.0, 0.0]), _var([0.0])
    optimizer = make_optimizer("sgd", learning_rate=1.0, clip_norm=1.0, clip_groups=[[a]])
    optimizer.build([a, mixture])
    grads = [np.array([30.0, 40.0], "float32"), np.array([7.0], "float32")]
    new_values, _ = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, [a.value, mixture.value])
    np.testing.assert_allclose(_np(new_values[0]), [-0.6, -0.8], atol=1e-6)
    np.testing.assert_allclose(_np(new_values[1]), [-7.0], atol=1e-6)
