"""`distribution="mirrored"` trains what one device trains.

On 2 logical CPU devices, in a subprocess (device set-up must precede TensorFlow's / JAX's initialisation, and the
main test process keeps one device) on the current KERAS_BACKEND, the toy engine runs twice from the same seed and
global batch, with `"none"` and with `"mirrored"`; the trained weights, the final ensemble's logits and every reported
number must agree. The scenarios cover per-candidate clipping that bites, learned mixture weights with adaptive
distillation (frozen members in the training graph), selection between two candidates on batches the devices split
unevenly, batch norm, and a kill and resume mid-iteration. Run as a script, this file is that subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# slow: the module fixture trains every scenario twice in a subprocess (about a minute)
pytestmark = [pytest.mark.multibackend, pytest.mark.slow]

DEVICES = 2


def _run_child(out_dir) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if env.get("KERAS_BACKEND", "tensorflow") == "jax":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    result = subprocess.run([sys.executable, __file__, str(out_dir)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((out_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distribution")
    return out_dir, _run_child(out_dir)


def _assert_same_run(out_dir, results, scenario, mirrored="mirrored"):
    want, got = results[f"{scenario}/none"], results[f"{scenario}/{mirrored}"]
    assert got["members"] == want["members"] and got["chosen"] == want["chosen"]
    assert [len(row) for row in got["numbers"]] == [len(row) for row in want["numbers"]]
    np.testing.assert_allclose(np.concatenate(got["numbers"]), np.concatenate(want["numbers"]), rtol=2e-4, atol=1e-5)
    with np.load(out_dir / f"{scenario}-none.npz") as a, np.load(out_dir / f"{scenario}-{mirrored}.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_allclose(b[name], a[name], rtol=2e-4, atol=1e-5, err_msg=name)


def test_float16_with_loss_scaling_matches_one_device(runs):
    # float16 arithmetic on a split batch differs in the last bits; summing the replicas' gradients twice (the bug
    # this guards against) would double every update, far outside this tolerance.
    out_dir, results = runs
    want, got = results["float16/none"], results["float16/mirrored"]
    np.testing.assert_allclose(np.concatenate(got["numbers"]), np.concatenate(want["numbers"]), rtol=2e-2, atol=2e-3)
    with np.load(out_dir / "float16-none.npz") as a, np.load(out_dir / "float16-mirrored.npz") as b:
        for name in a.files:
            np.testing.assert_allclose(b[name], a[name], rtol=2e-2, atol=2e-3, err_msg=name)


def test_mirrored_trains_on_every_device(runs):
    _, results = runs
    assert results["replicas"] == DEVICES
    assert results["grow/none"]["devices"] == [1] and results["grow/mirrored"]["devices"] == [DEVICES]


def test_clipped_distilled_two_candidate_run_matches_one_device(runs):
    out_dir, results = runs
    _assert_same_run(out_dir, results, "grow")
    # selection really compared two candidates, and clipping really bit (else this test would prove less)
    assert results["grow/none"]["evaluated_selection"]
    assert results["grow/none"]["numbers"][0] != results["grow_unclipped/none"]["numbers"][0]


def test_the_loss_ema_is_the_global_batch_s(runs):
    _, results = runs
    if results["ema_of_replica_values"] is not None:  # TensorFlow: replicas assign separately, aggregated by mean
        assert results["ema_of_replica_values"] == pytest.approx(2.0)


def test_batch_norm_statistics_are_the_global_batch(runs):
    out_dir, results = runs
    _assert_same_run(out_dir, results, "batchnorm")
    assert not results["batchnorm/mirrored"]["saved_synchronized"]  # saved members load on every backend


def test_resume_under_mirrored_continues_the_same_run(runs):
    out_dir, results = runs
    _assert_same_run(out_dir, results, "grow", mirrored="mirrored_resumed")


def test_an_unknown_distribution_is_a_one_line_usage_error():
    from improve_nas.adanet.runtime.distribution import make_distribution
    from improve_nas.config import Config
    from improve_nas.errors import UsageError

    for make in (lambda: Config(distribution="mirorred"), lambda: make_distribution("mirorred", batch_size=8)):
        with pytest.raises(UsageError) as error:
            make()
        message = str(error.value)
        assert "\n" not in message and "'mirorred'" in message and "none, mirrored" in message


def test_a_batch_the_devices_cannot_split_evenly_is_a_usage_error(runs):
    from improve_nas.adanet.runtime.distribution import make_distribution

    _, results = runs
    assert f"batch_size={DEVICES + 1} must be a multiple of the {DEVICES} devices" in results["odd_batch_error"]
    assert make_distribution("none", batch_size=DEVICES + 1).num_replicas == 1  # one device takes any batch


# ---- the subprocess ------------------------------------------------------------------------------------------------

def _child(out_dir: str) -> None:
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
    import keras
    import toy_engine as toy

    from improve_nas.adanet import EnsemblerSpec, LossSpec
    from improve_nas.adanet.runtime.distribution import make_distribution
    from improve_nas.adanet.runtime.engine import grow_ensemble, load_final_ensemble
    from improve_nas.adanet.runtime.run_directory import RunDirectory
    from improve_nas.errors import UsageError

    @keras.saving.register_keras_serializable(package="improve_nas_tests")
    class DenseBatchNormNet(keras.Model):
        """Dense -> BatchNormalization -> relu -> logits: training depends on each batch's statistics."""

        def __init__(self, *, width: int, num_classes: int, **kwargs):
            super().__init__(**kwargs)
            self.width, self.num_classes = width, num_classes
            self.flatten = keras.layers.Flatten()
            self.hidden = keras.layers.Dense(width)
            self.norm = keras.layers.BatchNormalization(momentum=0.5)
            self.head = keras.layers.Dense(num_classes)

        def call(self, x, training=False):
            h = keras.ops.relu(self.norm(self.hidden(self.flatten(x)), training=training))
            return {"logits": self.head(h), "features": h}

        def get_config(self):
            return {**super().get_config(), "width": self.width, "num_classes": self.num_classes}

    class BatchNormBuilder(toy.WidthBuilder):
        def build_subnetwork(self, *, num_classes, input_shape):
            return DenseBatchNormNet(width=self.width, num_classes=num_classes, name=self.name)

    class BatchNormGenerator(toy.Generator):
        def generate_candidates(self, previous_ensemble, iteration):
            return [BatchNormBuilder(8)]

    class Float16Generator(toy.Generator):
        def generate_candidates(self, previous_ensemble, iteration):
            return [Float16Builder(8)]

    class Float16Builder(toy.WidthBuilder):
        def build_subnetwork(self, *, num_classes, input_shape):
            # the toy net computing in float16 (mixed_float16: the engine adds dynamic loss scaling)
            return toy.DenseNet(width=self.width, num_classes=num_classes, name=self.name, dtype="mixed_float16")

    results = {"replicas": make_distribution("mirrored", batch_size=16).num_replicas}
    try:
        make_distribution("mirrored", batch_size=DEVICES + 1)
        results["odd_batch_error"] = None
    except UsageError as error:
        results["odd_batch_error"] = str(error)
    results["ema_of_replica_values"] = _ema_of_replica_values() if keras.backend.backend() == "tensorflow" else None
    # one fit chunk per iteration where no resume needs checkpoints in between (each chunk costs time)
    grow = dict(generator=toy.GrowingGenerator, num_iterations=2, optimizer="momentum", clip_norm=0.05,
                learning_rate=0.5, ensembler=EnsemblerSpec(learn_mixture_weights=True),
                loss=LossSpec(label_smoothing=0.1, distillation="adaptive"), checkpoint_steps=6)
    scenarios = {
        "grow": grow,
        "grow_unclipped": {**grow, "num_iterations": 1, "clip_norm": 0.0},
        "batchnorm": dict(generator=BatchNormGenerator, num_iterations=1, optimizer="sgd", learning_rate=0.2,
                          checkpoint_steps=6),
        "float16": dict(generator=Float16Generator, num_iterations=1, optimizer="momentum", learning_rate=0.5,
                        clip_norm=0.05, checkpoint_steps=6),
    }
    images = toy.toy_data().x_test

    devices_seen = []

    def callbacks(model, iteration, start_step, kill=False):
        probe = keras.callbacks.LambdaCallback(
            on_train_begin=lambda logs: devices_seen.append(_devices_holding(model.trainable_variables[0])))
        return [probe] + ([toy.Interrupt(3)] if kill and iteration == 1 else [])

    def run(scenario, distribution, path, kill=False, **overrides):
        options = {**scenarios[scenario], **overrides}
        generator = options.pop("generator")()
        settings = toy.settings(batch_size=16, evaluator_batch_size=32, eval_batch_size=15,
                                distribution=distribution, **options)
        devices_seen.clear()
        return grow_ensemble(run_dir=RunDirectory(path), settings=settings, generator=generator,
                             data=toy.toy_data(), make_preprocessing=lambda seed: toy.Scale(),
                             make_callbacks=lambda *args: callbacks(*args, kill=kill))

    def record(name, path, summaries):
        final = load_final_ensemble(RunDirectory(path))
        arrays = {f"{member.name}/{i}": np.asarray(keras.ops.convert_to_numpy(w))
                  for member in final.members for i, w in enumerate(member.weights)}
        logits = [m(toy.Scale()(images), training=False)["logits"] for m in final.members]
        arrays["final_logits"] = np.asarray(keras.ops.convert_to_numpy(final.ensembler(logits, None)))
        np.savez(os.path.join(out_dir, f"{name.replace('/', '-')}.npz"), **arrays)
        numbers = [[s["ensemble"]["loss"], s["ensemble"]["accuracy"]]
                   + [c["selection_loss"] or 0.0 for c in s["candidates"]]
                   + [v for m in s["member_metrics"].values() for v in (m["loss"], m["accuracy"])] for s in summaries]
        results[name] = {"members": summaries[-1]["members"], "chosen": [s["chosen"] for s in summaries],
                         "numbers": numbers, "devices": sorted(set(devices_seen)),
                         "evaluated_selection": any(c["selection_loss"] is not None
                                                    for s in summaries for c in s["candidates"]),
                         "saved_synchronized": any(getattr(layer, "synchronized", False) for m in final.members
                                                   for layer in m._flatten_layers())}

    for scenario, distributions in (("grow", ("none", "mirrored")), ("grow_unclipped", ("none",)),
                                    ("batchnorm", ("none", "mirrored")), ("float16", ("none", "mirrored"))):
        for distribution in distributions:
            path = os.path.join(out_dir, f"{scenario}-{distribution}")
            record(f"{scenario}/{distribution}", path, run(scenario, distribution, path))

    # killed in iteration 1 after 3 steps (its last checkpoint is at step 2), then resumed
    path = os.path.join(out_dir, "grow-mirrored_resumed")
    try:
        run("grow", "mirrored", path, kill=True, checkpoint_steps=2)
        raise AssertionError("the simulated kill did not happen")
    except KeyboardInterrupt:
        pass
    record("grow/mirrored_resumed", path, run("grow", "mirrored", path, checkpoint_steps=2))
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f)


def _ema_of_replica_values() -> float:
    """A `ZeroDebiasedEma` updated in replica context with 1.0 on one device and 3.0 on the other."""
    import tensorflow as tf

    from improve_nas.adanet.ema import ZeroDebiasedEma
    from improve_nas.adanet.runtime.tf_distribution import MirroredDistribution

    strategy = MirroredDistribution().strategy
    with strategy.scope():
        ema = ZeroDebiasedEma(decay=0.5)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(1.0 + 2.0 * context.replica_id_in_sync_group))
    strategy.run(tf.function(ema.update), args=(values,))
    return float(ema.result())


def _devices_holding(variable) -> int:
    value = variable.value
    if hasattr(value, "sharding"):  # a JAX array
        return len(value.sharding.device_set)
    return len(getattr(value, "values", [value]))  # a tf.distribute MirroredVariable has one value per replica


if __name__ == "__main__":
    _child(sys.argv[1])
