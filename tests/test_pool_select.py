"""The candidate pool (every candidate's model and own logits, iterations/<t>/pool/) and `improve-nas select`.

One toy run of 3 iterations with 2 candidates each (tests/toy_engine.py) is shared; `select` reads its copy.
"""

from __future__ import annotations

import json
import os
import shutil

import keras
import numpy as np
import pytest
import toy_engine as toy

from improve_nas import cli, ensemble_selection
from improve_nas.adanet import RunDirectory, grow_ensemble
from improve_nas.adanet.calibration import classification_metrics
from improve_nas.storage import integrity

DATA = toy.toy_data()


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool_run")
    toy.grow(path, generator=toy.GrowingGenerator())
    return str(path)


@pytest.fixture
def run_copy(run_path, tmp_path):
    """A copy of the shared run that a test may write into."""
    return shutil.copytree(run_path, str(tmp_path / "run"))


def _stored(path, iteration):
    with np.load(os.path.join(path, "iterations", str(iteration), "pool", "logits.npz")) as stored:
        return {key: stored[key] for key in stored.keys()}


def _own_logits(path, iteration, name, images):
    """The candidate's logits from its saved model (members/ when chosen, pool/ otherwise), after the preprocessing."""
    directory = os.path.join(path, "iterations", str(iteration))
    chosen = os.path.join(directory, "members", f"{name}.keras")
    model = keras.saving.load_model(chosen if os.path.exists(chosen) else
                                    os.path.join(directory, "pool", f"{name}.keras"), compile=False)
    return keras.ops.convert_to_numpy(model(toy.Scale()(images), training=False)["logits"])


def _assert_pool_matches_models(path, iteration, names):
    stored = _stored(path, iteration)
    for name in names:
        for part, images in (("selection", DATA.x_select), ("test", DATA.x_test)):
            assert stored[f"{name}/{part}"].dtype == np.float16
            np.testing.assert_allclose(stored[f"{name}/{part}"].astype(np.float32),
                                       _own_logits(path, iteration, name, images), rtol=2e-3, atol=2e-3)


def test_the_pool_keeps_every_candidate_once_with_its_own_logits(run_path):
    for iteration in range(3):
        directory = os.path.join(run_path, "iterations", str(iteration))
        summary = json.load(open(os.path.join(directory, "summary.json")))
        names = [entry["name"] for entry in summary["subnetworks"]]
        chosen = {entry["name"] for entry in summary["subnetworks"] if entry["chosen"]}
        assert len(names) == 2 and len(chosen) == 1
        for name in names:  # a chosen member is stored once, in members/
            assert os.path.exists(os.path.join(directory, "members", f"{name}.keras")) == (name in chosen)
            assert os.path.exists(os.path.join(directory, "pool", f"{name}.keras")) == (name not in chosen)
        stored = _stored(run_path, iteration)
        assert sorted(stored) == sorted([f"{n}/{p}" for n in names for p in ("selection", "test")]
                                        + ["labels/selection", "labels/test", "rows/selection", "rows/test"])
        np.testing.assert_array_equal(stored["labels/selection"], DATA.y_select)
        np.testing.assert_array_equal(stored["labels/test"], DATA.y_test)
        assert (int(stored["rows/selection"]), int(stored["rows/test"])) == (len(DATA.y_select), len(DATA.y_test))
        _assert_pool_matches_models(run_path, iteration, names)
        manifest = json.load(open(os.path.join(directory, integrity.MANIFEST)))["files"]
        assert {"pool/logits.npz"} | {f"pool/{n}.keras" for n in set(names) - chosen} <= set(manifest)


def test_a_damaged_pool_file_is_one_line_naming_it(run_copy, capsys):
    path = os.path.join(run_copy, "iterations", "1", "pool", "logits.npz")
    with open(path, "ab") as stream:
        stream.write(b"x")
    assert cli.main(["select", run_copy, "--method=forward", "--size=2"]) == 2
    assert path in capsys.readouterr().err
    assert not os.path.exists(os.path.join(run_copy, "selections"))


def test_without_an_evaluator_pass_the_pool_is_measured_and_keep_pool_off_writes_none(tmp_path):
    # One candidate in iteration 0: selection evaluates nothing, so the pool's own pass runs
    toy.grow(tmp_path / "single", num_iterations=1)
    _assert_pool_matches_models(str(tmp_path / "single"), 0, ["t0_dense_8"])
    toy.grow(tmp_path / "off", generator=toy.GrowingGenerator(), num_iterations=1, keep_pool=False)
    assert not os.path.exists(tmp_path / "off" / "iterations" / "0" / "pool")
    assert sorted(os.listdir(tmp_path / "off" / "iterations" / "0" / "members")) == ["t0_dense_5.keras"]
    assert cli.main(["select", str(tmp_path / "off"), "--method=caruana", "--size=2"]) == 2
    assert not os.path.exists(tmp_path / "off" / "selections")


def test_a_run_killed_mid_iteration_keeps_the_same_pool(run_path, tmp_path):
    def interrupt(model, iteration, step):
        return [toy.Interrupt(after=3)] if iteration == 1 and step == 0 else []

    def grow():
        grow_ensemble(run_dir=RunDirectory(str(tmp_path)), settings=toy.settings(), generator=toy.GrowingGenerator(),
                      data=DATA, make_preprocessing=lambda seed: toy.Scale(), make_callbacks=interrupt)

    with pytest.raises(KeyboardInterrupt):
        grow()
    assert not os.path.exists(tmp_path / "iterations" / "1")
    grow()
    for iteration in range(3):
        resumed, whole = _stored(str(tmp_path), iteration), _stored(run_path, iteration)
        assert sorted(resumed) == sorted(whole)
        for key in whole:
            np.testing.assert_allclose(resumed[key].astype(np.float32), whole[key].astype(np.float32), atol=2e-3)


def _no_model_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("select ran or loaded a model")

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    monkeypatch.setattr(keras.layers.Layer, "__call__", refuse)
    monkeypatch.setattr(keras.Model, "predict", refuse)
    monkeypatch.setattr(keras.Model, "predict_on_batch", refuse)


def _expected_figures(path, record, part):
    """`classification_metrics` of the stored logits mixed with the record's weights, computed here."""
    stored = {key: value for t in range(3) for key, value in _stored(path, t).items()}
    logits = sum(member["weight"] * stored[f"{member['name']}/{part}"].astype(np.float64)
                 for member in record["members"])
    return classification_metrics(logits, stored[f"labels/{part}"])


@pytest.mark.parametrize("method,size,metric", [("forward", 3, "nll"), ("caruana", 4, "error"), ("prune", 2, "nll")])
def test_select_builds_an_ensemble_from_the_saved_logits_only(run_copy, monkeypatch, capsys, method, size, metric):
    _no_model_runs(monkeypatch)
    assert cli.main(["select", run_copy, f"--method={method}", f"--size={size}", f"--metric={metric}"]) == 0
    out = capsys.readouterr().out
    name = f"{method}-{size}-{metric}"
    record = json.load(open(os.path.join(run_copy, "selections", name, "selection.json")))
    assert out.startswith(f"grown: 3 members, selection {metric} ") and f" | {name}: " in out
    assert (record["method"], record["metric"], record["size"]) == (method, metric, size)
    assert sum(member["weight"] for member in record["members"]) == pytest.approx(1.0)
    for part in ("selection", "test"):
        assert record[part] == pytest.approx(_expected_figures(run_copy, record, part), abs=1e-9)
    if method == "caruana":  # weights are counts / rounds
        assert {round(member["weight"] * size, 9) % 1 for member in record["members"]} == {0.0}
    pool = ensemble_selection.load_pool(run_copy)
    best_single = min(ensemble_selection.metric_value(logits, pool.labels["selection"], metric)
                      for logits in pool.selection)
    if method != "prune":
        assert record["selection"][metric] <= best_single + 1e-12
    else:
        grown = json.load(open(os.path.join(run_copy, "iterations", "2", "summary.json")))["members"]
        assert len(record["members"]) == size and {m["name"] for m in record["members"]} <= set(grown)
        assert [m["weight"] for m in record["members"]] == pytest.approx([1 / size] * size)


def test_the_grown_ensemble_scored_from_the_pool_is_the_runs_own(run_copy):
    record = ensemble_selection.select(run_copy, method="prune", size=3)
    summary = json.load(open(os.path.join(run_copy, "iterations", "2", "summary.json")))
    assert record["grown"]["members"] == summary["members"]
    for key in ("accuracy", "nll", "ece"):  # the default fixed mixture weights are uniform; float16 logits
        assert record["grown"]["test"][key] == pytest.approx(summary["ensemble"][key], abs=2e-3)
    assert record["test"] == record["grown"]["test"]  # pruning to the full size removes nothing


@pytest.mark.parametrize("seed", range(6))
def test_forward_and_caruana_are_never_worse_than_the_best_single_member(seed):
    rng = np.random.default_rng(seed)
    candidates, rows, classes = int(rng.integers(2, 9)), 200, 5
    labels = rng.integers(0, classes, size=rows)
    # Members of mixed quality: a label signal of random strength, plus noise
    logits = (rng.uniform(0, 3, size=(candidates, 1, 1)) * np.eye(classes)[labels]
              + rng.normal(0, rng.uniform(0.5, 3), size=(candidates, rows, classes)))
    for metric in ("nll", "error"):
        best = min(ensemble_selection.metric_value(member, labels, metric) for member in logits)
        for size in (1, 2, 3, candidates):
            weights = ensemble_selection.forward(logits, labels, size, metric)
            assert 1 <= np.count_nonzero(weights) <= size
            assert ensemble_selection.metric_value(ensemble_selection.combine(logits, weights), labels,
                                                   metric) <= best + 1e-12
    best = min(ensemble_selection.metric_value(member, labels, "nll") for member in logits)
    for rounds in (1, 2, 5, 9):  # the NLL is convex in the logits: greedy rounds never end above the best single
        weights = ensemble_selection.caruana(logits, labels, rounds, "nll")
        assert np.isclose(weights.sum(), 1.0) and np.allclose(weights * rounds, np.round(weights * rounds))
        assert ensemble_selection.metric_value(ensemble_selection.combine(logits, weights), labels,
                                               "nll") <= best + 1e-12


def test_select_overwrites_a_selection_of_the_same_name(run_copy):
    ensemble_selection.select(run_copy, method="forward", size=2, name="mine")
    ensemble_selection.select(run_copy, method="prune", size=1, name="mine")
    record = json.load(open(os.path.join(run_copy, "selections", "mine", "selection.json")))
    assert record["method"] == "prune" and len(record["members"]) == 1
    assert os.listdir(os.path.join(run_copy, "selections", "mine")) == ["selection.json"]


@pytest.mark.parametrize("flags,message", [
    (["--method=forwrd", "--size=2"], "--method='forwrd' is not a method: did you mean forward? choose one of"),
    (["--method=caruana", "--size=2", "--metric=nl"], "--metric='nl' is not a metric: did you mean nll?"),
    (["--method=caruana", "--size=0"], "--size=0 must be at least 1"),
    (["--method=forward", "--size=7"], "--size=7 is larger than the pool (6 members)"),
    (["--method=prune", "--size=4"], "--size=4 is larger than the grown ensemble (3 members)"),
    (["--method=prune", "--size=2", "--name=../out"], "--name='../out' must be letters"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_copy, capsys, flags, message):
    assert cli.main(["select", run_copy, *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not os.path.exists(os.path.join(run_copy, "selections"))
