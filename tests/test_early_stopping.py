"""Early stopping (issue 15, item 4): the decision on hand-written loss sequences, a run whose later iterations cannot
help stopping after `patience` of them, its report, and a rerun that trains nothing and keeps the decision."""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np
import pytest
from toy_engine import WidthBuilder, grow

import improve_nas
from improve_nas.adanet import Builder, Generator
from improve_nas.adanet.stopping import COMPLETED, EARLY_STOPPING, UNFINISHED, decide, early_stop, outcome
from improve_nas.config import HParams
from improve_nas.errors import UsageError
from improve_nas.report import load_report

# ---- the decision ------------------------------------------------------------------------------------------------

def test_a_plateau_stops_after_patience_iterations_without_improvement():
    stop = early_stop([1.0, 0.8, 0.8, 0.8, 0.8], patience=2, min_delta=0.01)
    assert (stop.after_iteration, stop.best_iteration, stop.best_loss) == (3, 1, 0.8)
    assert "stopping after iteration 4/10" in stop.explain(10) and "best 0.8000 at iteration 2" in stop.explain(10)


def test_noise_within_the_margin_is_no_improvement():
    stop = early_stop([0.5, 0.499, 0.5005, 0.4995], patience=3, min_delta=0.01)
    assert (stop.after_iteration, stop.best_iteration) == (3, 0)


def test_an_improvement_on_the_last_allowed_iteration_resets_the_count():
    losses = [1.0, 1.0, 0.9, 0.9]  # iteration 2 improves just before patience 2 runs out
    assert early_stop(losses, patience=2, min_delta=0.01) is None
    assert early_stop(losses + [0.9], patience=2, min_delta=0.01).after_iteration == 4


def test_small_gains_count_once_they_add_up_to_the_margin():
    # Each step gains 0.006 < 0.01, but the best moves only on a real improvement: the second step is one.
    assert early_stop([1.0, 0.994, 0.988, 0.982], patience=2, min_delta=0.01) is None


def test_patience_0_never_stops_and_missing_losses_do_not_improve():
    assert early_stop([1.0] * 20, patience=0, min_delta=0.0) is None
    assert early_stop([None, None, None], patience=1, min_delta=0.0) is None  # nothing measured: no best yet
    assert early_stop([1.0, None, math.nan], patience=2, min_delta=0.0).after_iteration == 2


def test_the_loss_judged_is_the_chosen_ensembles_selection_loss():
    summaries = [{"chosen": "b", "candidates": [{"name": "a", "selection_loss": 0.1},
                                                {"name": "b", "selection_loss": loss}]} for loss in (0.9, 0.9, 0.9)]
    assert decide(summaries, patience=2, min_delta=0.0).best_loss == 0.9  # not a's 0.1


def test_outcome_names_why_the_run_ended():
    entries = [{"chosen": "c", "candidates": [{"name": "c", "selection_loss": 1.0}]}] * 3
    assert outcome(entries, num_iterations=5, patience=2, min_delta=0.0)["reason"] == EARLY_STOPPING
    assert outcome(entries, num_iterations=3, patience=2, min_delta=0.0)["reason"] == COMPLETED
    assert outcome(entries, num_iterations=5, patience=0, min_delta=0.0)["reason"] == UNFINISHED


@pytest.mark.parametrize("name, value", [("early_stopping_patience", -1), ("early_stopping_min_delta", -0.01)])
def test_negative_settings_are_refused_in_one_line(name, value):
    with pytest.raises(UsageError, match=f"^hparam {name}={value} must be >= 0$"):
        HParams(**{name: value})


# ---- a run whose later iterations cannot help --------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="improve_nas_stopping_tests")
class ZeroLogits(keras.Model):
    """A Dense net multiplied by 0: trainable weights, zero gradients, logits 0 (chance) whatever it learns."""

    def __init__(self, *, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        h = self.flatten(keras.ops.cast(x, "float32"))
        return {"logits": 0.0 * self.head(h), "features": h}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class ZeroBuilder(Builder):
    name = "zero"

    def build_subnetwork(self, *, num_classes, input_shape):
        return ZeroLogits(num_classes=num_classes, name=self.name)


class UselessAfterFirst(Generator):
    """Iteration 0 learns; later iterations offer only a chance-level net, alone (solo), against the previous ensemble
    (no force_grow): the best candidate is the unchanged previous ensemble, whose selection loss stays the same."""

    def generate_candidates(self, previous_ensemble, iteration):
        return [WidthBuilder(8) if iteration == 0 else ZeroBuilder()]


def _trained_iterations(path):
    return sorted(os.listdir(os.path.join(path, "iterations")))


@pytest.mark.multibackend
def test_a_run_stops_when_later_iterations_cannot_help_and_a_rerun_trains_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    options = dict(generator=UselessAfterFirst(), num_iterations=6, strategy="solo", force_grow=False,
                   early_stopping_patience=2, early_stopping_min_delta=0.001, verbose=True)
    summaries = grow(run, **options, iteration_steps=4)
    assert [s["iteration"] for s in summaries] == [0, 1, 2]  # iteration 0, then 2 without improvement
    assert _trained_iterations(run) == ["0", "1", "2"]
    assert all(s["members"] == summaries[0]["members"] for s in summaries[1:])  # the ensemble stopped growing
    assert summaries[0]["candidates"][0]["selection_loss"] is not None  # measured although one candidate won alone
    out = capsys.readouterr().out
    assert "stopping after iteration 3/6: the selection loss has not improved by 0.001 for 2 iterations" in out

    again = grow(run, **dict(options, generator=UselessAfterFirst()), iteration_steps=4)
    assert again == summaries and _trained_iterations(run) == ["0", "1", "2"]
    assert "stopping after iteration 3/6" in capsys.readouterr().out  # the same decision, from disk


def chance_net(num_classes, input_shape):
    return ZeroLogits(num_classes=num_classes)


@pytest.mark.multibackend
def test_grow_records_why_it_stopped_in_report_json_and_exports_the_last_ensemble(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(48, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=48).astype(np.int32)
    model_dir = str(tmp_path / "run")
    options = dict(model_dir=model_dir, iterations=5, steps_per_iteration=2, batch_size=16, verbose=False,
                   early_stopping_patience=1)
    result = improve_nas.grow(chance_net, x, y, x[:16], y[:16], **options)  # every member: chance, by construction
    with open(os.path.join(model_dir, "report.json")) as file:
        stopped = json.load(file)["stopped"]
    assert stopped["reason"] == EARLY_STOPPING and (stopped["after_iteration"], stopped["best_iteration"]) == (1, 0)
    assert result.report["stopped"] == stopped and len(result.rows) == 2
    assert "stopped early: stopping after iteration 2/5" in open(os.path.join(model_dir, "report.md")).read()
    assert result.ensemble.predict(x[:4], verbose=0)["logits"].shape == (4, 3)  # the export serves iteration 1's

    os.remove(os.path.join(model_dir, "report.json"))  # rebuilt from the summaries and grow.json
    assert load_report(model_dir)["stopped"] == stopped
    again = improve_nas.grow(chance_net, x, y, x[:16], y[:16], **options)
    assert again.report == result.report and _trained_iterations(model_dir) == ["0", "1"]



@pytest.mark.slow  # TensorFlow only: the engine's part is checked on both backends above
def test_improve_nas_train_stops_records_and_a_rerun_does_nothing(tmp_path, capsys):
    # A margin of 100 nats cannot be beaten (the loss is >= 0): every iteration after the first fails to improve.
    model_dir = str(tmp_path / "run")
    settings = dict(model_dir=model_dir, train_steps=3, tf_random_seed=1, hparams={
        "boosting_iterations": 3, "early_stopping_patience": 1, "early_stopping_min_delta": 100.0})
    report = improve_nas.train("smoke", **settings)
    assert report["stopped"]["reason"] == EARLY_STOPPING and report["stopped"]["after_iteration"] == 1
    assert _trained_iterations(model_dir) == ["0", "1"] and report["final"]["members"] == 2
    assert "stopping after iteration 2/3" in capsys.readouterr().out

    assert improve_nas.train("smoke", **settings) == report
    assert "already stopped early (stopping after iteration 2/3" in capsys.readouterr().out
    assert _trained_iterations(model_dir) == ["0", "1"]
