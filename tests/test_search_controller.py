"""The REINFORCE controller (improve_nas.search.controller): a pure function of (seed, iteration, history, state),
its state survives JSON and `keras.backend.clear_session()`, it proposes distinct new genotypes, learns from a
clearly better candidate, and leaves Keras' name counters alone (the engine's layer names must not depend on it)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from improve_nas.errors import UsageError
from improve_nas.search import controller, proposals, space

pytestmark = pytest.mark.multibackend

OP_SET, BLOCKS, K = "darts", 2, 4
SMALL = dict(num_blocks=BLOCKS, units=16)  # a small LSTM keeps each eager update quick


def _losses(genotypes, best=None):
    """Selection losses: `best` (an index) clearly lowest, the others in proposal order."""
    return [0.1 if i == best else 1.0 + i for i in range(len(genotypes))]


def _record(iteration, genotypes, losses):
    return [proposals.history_entry(iteration, g, loss) for g, loss in zip(genotypes, losses)]


def _two_iterations(seed=3, state=None, **options):
    """Iteration 0 from a fresh controller, then iteration 1 after an update on iteration 0's candidates."""
    first, state = controller.controller_proposals(seed, 0, [], K, OP_SET, state=state, **SMALL, **options)
    history = _record(0, first, _losses(first, best=2))
    second, new_state = controller.controller_proposals(seed, 1, history, K, OP_SET, state=state, **SMALL, **options)
    return first, state, history, second, new_state


def test_proposals_and_state_are_a_function_of_the_inputs():
    first, state, history, second, new_state = _two_iterations()
    again = _two_iterations()
    assert [g.to_json() for g in again[0]] == [g.to_json() for g in first]
    assert [g.to_json() for g in again[3]] == [g.to_json() for g in second]
    assert again[4] == new_state and new_state["updates"] == 1
    other = _two_iterations(seed=4)
    assert [g.to_json() for g in other[0]] != [g.to_json() for g in first]


def test_a_state_restored_from_json_proposes_identically():
    _, _, history, second, state = _two_iterations()
    history += _record(1, second, _losses(second, best=0))
    restored = json.loads(json.dumps(state))
    direct = controller.controller_proposals(3, 2, history, K, OP_SET, state=state, **SMALL)
    via_json = controller.controller_proposals(3, 2, history, K, OP_SET, state=restored, **SMALL)
    assert [g.to_json() for g in via_json[0]] == [g.to_json() for g in direct[0]]
    assert via_json[1] == direct[1]
    assert len(json.dumps(state)) < 100_000  # weights and Adam's moments of a 16-unit LSTM, base64


def test_the_state_survives_clear_session_and_leaves_keras_name_counters_alone():
    from keras.src.backend.common import global_state  # private: the counters behind automatic layer names

    _, _, history, second, state = _two_iterations()
    history += _record(1, second, _losses(second, best=1))
    expected = controller.controller_proposals(3, 2, history, K, OP_SET, state=state, **SMALL)
    keras.backend.clear_session()
    keras.layers.Dense(2)  # the engine's first layer of an iteration
    counters = dict(global_state.get_global_attribute("object_name_uids") or {})
    after = controller.controller_proposals(3, 2, history, K, OP_SET, state=state, **SMALL)
    assert dict(global_state.get_global_attribute("object_name_uids") or {}) == counters
    assert [g.to_json() for g in after[0]] == [g.to_json() for g in expected[0]] and after[1] == expected[1]
    assert keras.layers.Dense(2).name == "dense_1"  # as if no controller had run


_UNDER_DISTRIBUTION = """
import json, os, sys
import keras
from improve_nas.search import controller, proposals
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    scope = tf.distribute.MirroredStrategy().scope
else:
    scope = keras.distribution.DataParallel().scope
first, state = controller.controller_proposals(3, 0, [], 4, "darts", num_blocks=2, units=16)
history = [proposals.history_entry(0, g, float(i)) for i, g in enumerate(first)]
alone = controller.controller_proposals(3, 1, history, 4, "darts", state=state, num_blocks=2, units=16)
keras.config.set_dtype_policy("mixed_bfloat16")
with scope():
    within = controller.controller_proposals(3, 1, history, 4, "darts", state=state, num_blocks=2, units=16)
print(json.dumps({"same": within[1] == alone[1], "devices": len(keras.distribution.list_devices())}))
"""


def test_the_update_is_the_same_under_a_distribution_and_a_dtype_policy_of_the_caller():
    # The engine proposes inside its distribution scope: a mirrored strategy over 2 devices would scale the update.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(pathlib.Path(__file__).resolve().parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _UNDER_DISTRIBUTION], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"same": True, "devices": 2}


def test_proposals_are_distinct_and_never_repeat_the_history():
    # 1 block of 7 operations and 2 states per cell: repeats would be likely without the check
    history, state = [], None
    for iteration in range(5):
        genotypes, state = controller.controller_proposals(0, iteration, history, 6, OP_SET, state=state,
                                                           num_blocks=1, units=8, learning_rate=0.2)
        history += _record(iteration, genotypes, _losses(genotypes, best=0))
    digests = [space.Genotype.from_json(entry["genotype"]).digest() for entry in history]
    assert len(set(digests)) == len(digests) == 30


def test_an_update_raises_the_probability_of_the_best_candidate_and_lowers_the_worst():
    first, state, _, _, new_state = _two_iterations()
    best, worst = first[2], first[3]  # losses 0.1 and 4.0
    assert controller.log_probability(new_state, best) > controller.log_probability(state, best) + 0.05
    assert controller.log_probability(new_state, worst) < controller.log_probability(state, worst) - 0.05


def test_candidates_without_a_finite_loss_give_no_reward():
    first, state = controller.controller_proposals(3, 0, [], K, OP_SET, **SMALL)
    one_scored = _record(0, first, [0.5, math.nan, math.nan, math.nan])
    one_scored[1]["selection_loss"] = None  # not scored, as the engine records it
    _, unchanged = controller.controller_proposals(3, 1, one_scored, K, OP_SET, state=state, **SMALL)
    assert unchanged["updates"] == 0 and unchanged["arrays"] == state["arrays"]
    two_scored = _record(0, first, [0.5, 0.2, math.nan, math.nan])
    _, updated = controller.controller_proposals(3, 1, two_scored, K, OP_SET, state=state, **SMALL)
    assert updated["updates"] == 1 and updated["baseline"] == pytest.approx(0.5)  # rewards 0 and 1


def test_the_keras_policy_and_its_numpy_mirror_agree():
    # sampling and `log_probability` run the policy in numpy; training runs it in Keras: the same function
    _, _, history, second, state = _two_iterations()
    layout = controller.Layout(space.op_set(OP_SET), BLOCKS)
    _, _, weights, _ = controller._unpack(state)
    network = controller._network(layout, 16, entropy_weight=0.0)
    for name, variable in network.w.items():
        variable.assign(weights[name])
    actions = np.stack([layout.encode(g) for g in second])
    logits = keras.ops.convert_to_numpy(network(layout.inputs(actions))).astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    keras_log_p = np.take_along_axis(log_p, actions[..., None], axis=-1).sum(axis=(1, 2))
    numpy_log_p = [controller.log_probability(state, g) for g in second]
    np.testing.assert_allclose(keras_log_p, numpy_log_p, atol=1e-4)


def test_layout_encodes_and_decodes_every_decision():
    layout = controller.Layout(space.op_set("nasnet"), 5)
    assert layout.num_steps == 40  # 2 cells x 5 blocks x (state, operation, state, operation)
    genotype = space.sample(np.random.default_rng(0), "nasnet")
    assert layout.decode(layout.encode(genotype)) == genotype
    assert layout.encode(space.NASNET_A) is None  # an explicit output list: not in the policy's space


@pytest.mark.parametrize("call, message", [
    (lambda: controller.controller_proposals(0, 0, [], 0, OP_SET), "candidates per iteration must be"),
    (lambda: controller.controller_proposals(0, 0, [], 2, "dart"), "unknown operation set 'dart'"),
    (lambda: controller.controller_proposals(0, 0, [], 2, OP_SET, state={"format": "x"}), "controller state must"),
    (lambda: controller.controller_proposals(0, 0, [], 2, OP_SET, baseline_decay=1.0), "baseline_decay in"),
])
def test_bad_input_gives_one_line_usage_errors(call, message):
    with pytest.raises(UsageError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_a_state_of_another_space_is_refused():
    _, state = controller.controller_proposals(0, 0, [], 2, OP_SET, **SMALL)
    with pytest.raises(UsageError, match="controller state is for 16 units, 2 blocks"):
        controller.controller_proposals(0, 1, [], 2, "nasnet", state=state, **SMALL)
