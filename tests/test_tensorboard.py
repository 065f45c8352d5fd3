"""TensorBoard summaries (improve_nas/summaries.py) as the run writes them: per-step values, loss terms, every candidate.

The engine runs in process on tiny Dense subnetworks (with weight decay and an aux head, so every term is non-zero),
with the callbacks `improve_nas.run` gives it; the event files are read back with TensorFlow's summary iterator.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import types

import keras
import pytest
from toy_engine import Scale, toy_data

from improve_nas import run
from improve_nas.adanet import Builder, EnsemblerSpec, Generator, LossSpec
from improve_nas.adanet.runtime.engine import EngineSettings, grow_ensemble
from improve_nas.adanet.runtime.run_directory import RunDirectory
from improve_nas.preemption import PreemptionGuard

pytestmark = pytest.mark.multibackend

STEPS = 4


@keras.saving.register_keras_serializable(package="improve_nas_tensorboard_tests")
class DecayedNet(keras.Model):
    """Flat input -> Dense(8, L2) -> logits, and aux logits in training."""

    def __init__(self, *, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(8, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2))
        self.head = keras.layers.Dense(num_classes)
        self.aux = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        h = self.hidden(self.flatten(x))
        out = {"logits": self.head(h), "features": h}
        if training:
            out["aux_logits"] = self.aux(h)
        return out

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class DecayedBuilder(Builder):
    def __init__(self, name):
        self._name = name

    @property
    def name(self):
        return self._name

    def build_subnetwork(self, *, num_classes, input_shape):
        return DecayedNet(num_classes=num_classes, name=self._name)


class TwoCandidates(Generator):
    def generate_candidates(self, previous_ensemble, iteration):
        return [DecayedBuilder("a"), DecayedBuilder("b")]


def grow(path, *, checkpoint_steps=2, learning_rate=0.1, **overrides):
    """Two iterations of two candidates; summaries at every step, wired as `improve_nas.run` wires them."""
    settings = EngineSettings(**{
        "num_iterations": 2, "iteration_steps": STEPS, "batch_size": 16, "optimizer": "sgd",
        "learning_rate": learning_rate, "loss": LossSpec(label_smoothing=0.1, aux_head_weight=0.4),
        "checkpoint_steps": checkpoint_steps, "checkpoint_secs": 0, "seed": 5, "verbose": False, **overrides})
    config = types.SimpleNamespace(save_summary_steps=1, iteration_steps=STEPS, batch_size=settings.batch_size)
    run_dir = RunDirectory(str(path))
    data = toy_data()
    grow_ensemble(run_dir=run_dir, settings=settings, generator=TwoCandidates(), data=data,
                  make_preprocessing=lambda seed: Scale(),
                  make_callbacks=run._training_callbacks(config, run_dir, PreemptionGuard(), data, seed=settings.seed))
    return read_events(path / "tensorboard")


def read_events(root):
    """{directory relative to root: {tag: {step: value}}}."""
    import tensorflow as tf

    found = collections.defaultdict(lambda: collections.defaultdict(dict))
    for directory, _, files in os.walk(root):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
                for value in event.summary.value:
                    number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                    found[os.path.relpath(directory, root)][value.tag][event.step] = float(number)
    return found


def training_values(events):
    return {(directory, tag): steps for directory, tags in events.items() for tag, steps in tags.items()
            if directory.startswith(("subnetwork/t", "ensemble/")) and not directory.endswith("/eval")
            and not tag.startswith("mixture_weight_norms")}


@pytest.mark.slow
def test_values_are_those_of_each_step_whatever_the_checkpoint_period(tmp_path):
    every_step = training_values(grow(tmp_path / "one", checkpoint_steps=1))
    one_chunk = training_values(grow(tmp_path / "four", checkpoint_steps=STEPS))
    assert every_step.keys() == one_chunk.keys()
    assert every_step[("subnetwork/t1_a", "loss")].keys() == set(range(STEPS + 1, 2 * STEPS + 1))
    for key, steps in every_step.items():
        assert steps.keys() == one_chunk[key].keys(), key
        for step, value in steps.items():
            assert value == pytest.approx(one_chunk[key][step], rel=1e-5, abs=1e-6), (key, step)


def test_loss_terms_are_written_and_add_up_to_the_total(tmp_path):
    events = grow(tmp_path / "run", loss=LossSpec(label_smoothing=0.1, aux_head_weight=0.4, distillation="adaptive"),
                  ensembler=EnsemblerSpec(learn_mixture_weights=True, adanet_lambda=0.1))
    for t in (0, 1):
        for member in (f"t{t}_a", f"t{t}_b"):
            tags = events[f"subnetwork/{member}"]
            terms = {"loss/cross_entropy", "loss/l2", "loss/aux_head"} | ({"loss/distillation"} if t else set())
            assert set(tags) == terms | {"loss", "learning_rate"}, member
            for step, total in tags["loss"].items():
                assert all(tags[term][step] > 0 for term in terms), (member, step)
                assert sum(tags[term][step] for term in terms) == pytest.approx(total, rel=1e-5), (member, step)
        for candidate in (f"t{t}_a_grow", f"t{t}_b_grow"):
            tags = events[f"ensemble/{candidate}"]
            assert {"adanet_loss", "adanet_loss/cross_entropy", "adanet_loss/complexity"} <= set(tags), candidate
            for step, total in tags["adanet_loss"].items():
                assert tags["adanet_loss/complexity"][step] > 0
                assert tags["adanet_loss/cross_entropy"][step] + tags["adanet_loss/complexity"][step] == \
                    pytest.approx(total, rel=1e-5)


@pytest.mark.slow
def test_every_candidate_ensemble_has_its_adanet_loss_on_the_steps_batch_without_learned_weights(tmp_path):
    """Without learned mixture weights the ensembles are left out of the training step and computed apart, on the
    batch of the step, in inference mode. With a learning rate of 0 (and members that behave the same in training and
    inference), that equals what the training step computes when it does compute them (learned weights, which start
    as the uniform average the default uses)."""
    apart = grow(tmp_path / "apart", learning_rate=0.0)
    in_step = grow(tmp_path / "in_step", learning_rate=0.0, ensembler=EnsemblerSpec(learn_mixture_weights=True))
    for t in (0, 1):
        for candidate in (f"t{t}_a_grow", f"t{t}_b_grow"):
            tags = apart[f"ensemble/{candidate}"]
            assert set(tags) == {"adanet_loss", "adanet_loss/cross_entropy", "adanet_loss/complexity"}, candidate
            assert tags["adanet_loss"].keys() == set(range(t * STEPS + 1, (t + 1) * STEPS + 1))
            for step, value in tags["adanet_loss"].items():
                assert value == pytest.approx(in_step[f"ensemble/{candidate}"]["adanet_loss"][step], rel=1e-5)
    losses = [apart["ensemble/t1_a_grow"]["adanet_loss"][step] for step in range(STEPS + 1, 2 * STEPS + 1)]
    assert len(set(losses)) == STEPS  # a batch of its own at every step


@pytest.mark.parametrize("job_dir, error", [("/tmp/b", True), ("/tmp/a/", False)])
def test_job_dir_naming_another_directory_than_model_dir_is_a_usage_error(job_dir, error):
    result = subprocess.run(
        [sys.executable, "-m", "improve_nas.trainer.trainer", "--model_dir=/tmp/a", f"--job-dir={job_dir}",
         "--preset=no_such_preset"], check=False, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if error:
        assert "--model_dir=/tmp/a" in lines[0] and "--job-dir=/tmp/b" in lines[0]
    else:
        assert "no_such_preset" in lines[0]
