"""Calibration metrics (improve_nas/adanet/calibration.py) against hand-computed cases and a loop-by-loop reference."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from improve_nas.adanet.calibration import (
    ECE_BINS,
    brier_score,
    classification_metrics,
    expected_calibration_error,
)


def reference_metrics(logits, labels, bins=15):
    """A plain-loop reference of the documented definitions, written independently of the module."""
    logits = np.asarray(logits, dtype=np.float64)
    nll = ece = brier = hits = 0.0
    members = [[] for _ in range(bins)]
    for row, label in zip(logits, labels):
        p = np.exp(row - row.max())
        p /= p.sum()
        nll -= math.log(p[label])
        brier += sum((p[k] - (k == label)) ** 2 for k in range(len(p)))
        hits += int(np.argmax(p) == label)
        confidence = float(p.max())
        bin_index = 0  # (lo, hi] with the first bin closed at 0
        for b in range(bins):
            if b / bins < confidence <= (b + 1) / bins:
                bin_index = b
        members[bin_index].append((confidence, float(np.argmax(p) == label)))
    n = len(labels)
    for entries in members:
        if entries:
            ece += len(entries) / n * abs(np.mean([c for _, c in entries]) - np.mean([h for h, _ in entries]))
    return {"accuracy": hits / n, "nll": nll / n, "ece": ece, "brier": brier / n}


def test_perfectly_calibrated_predictions_have_zero_ece():
    # confidence 0.8 each; 4 of 5 right: the bin's accuracy equals its confidence
    confidences = np.full(5, 0.8)
    assert expected_calibration_error(confidences, [1, 1, 1, 1, 0]) == pytest.approx(0.0, abs=1e-12)
    # two bins, each calibrated: 0.5 (1 of 2 right) and 1.0 (always right)
    assert expected_calibration_error([0.5, 0.5, 1.0, 1.0], [1, 0, 1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_over_confident_predictions():
    # all at confidence 0.9, half right: |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.full(4, 0.9), [1, 0, 1, 0]) == pytest.approx(0.4)


def test_one_example_bins_weight_by_count():
    # three bins of one example each: |1 - 0.55|, |0 - 0.75|, |1 - 0.95|, each weighted 1/3
    assert expected_calibration_error([0.55, 0.75, 0.95], [1, 0, 1]) == pytest.approx((0.45 + 0.75 + 0.05) / 3)


def test_bin_edges_at_zero_and_one():
    # 1.0 falls in the last bin (14/15, 1]; 0.0 in the first [0, 1/15]: each is its own bin here
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)
    # 1.0 and 0.95 share the last bin: |mean(1, 0) - mean(1.0, 0.95)| over both rows
    assert expected_calibration_error([1.0, 0.95], [1, 0]) == pytest.approx(abs(0.5 - 0.975))
    # a confidence exactly on an inner edge belongs to the bin below it: 0.6 = 9/15 joins 0.55 in (8/15, 9/15]
    assert expected_calibration_error([0.6, 0.55], [1, 0], bins=15) == pytest.approx(abs(0.5 - 0.575))
    assert expected_calibration_error([0.6, 0.61], [1, 0], bins=15) == pytest.approx((0.4 + 0.61) / 2)


def test_brier_definition_sums_over_classes():
    # p = (0.7, 0.2, 0.1), label 0: 0.09 + 0.04 + 0.01; p = (0.5, 0.5, 0), label 2: 0.25 + 0.25 + 1
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert brier_score(probabilities, [0, 2]) == pytest.approx((0.14 + 1.5) / 2)


def test_classification_metrics_of_hand_computed_logits():
    # two classes; logits (0, log 3) give p = (0.25, 0.75); labels 1 and 0
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    metrics = classification_metrics(logits, np.array([1, 0]))
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["error"] == pytest.approx(0.5)
    assert metrics["nll"] == metrics["loss"] == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
    assert metrics["ece"] == pytest.approx(0.25)  # one bin: confidence 0.75, accuracy 0.5
    assert metrics["brier"] == pytest.approx((2 * 0.25 ** 2 + 2 * 0.75 ** 2) / 2)
    assert metrics["ece_bins"] == ECE_BINS == 15


@pytest.mark.parametrize("seed, scale", [(0, 0.5), (1, 3.0), (2, 12.0)])
def test_classification_metrics_match_the_reference(seed, scale):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(200, 7)) * scale).astype(np.float32)
    labels = rng.integers(0, 7, size=200)
    metrics, expected = classification_metrics(logits, labels), reference_metrics(logits, labels)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-10), key
    assert metrics["ece"] > 0.0


def test_no_examples_is_an_error():
    with pytest.raises(ValueError):
        expected_calibration_error([], [])


# ---- a real tiny run: what report.json records equals the reference on the run's own saved models' predictions ----

@pytest.mark.multibackend
def test_a_run_reports_the_calibration_of_its_saved_models(tmp_path):
    import json

    import keras
    from toy_engine import GrowingGenerator, Scale, grow, toy_data

    from improve_nas import report
    from improve_nas.adanet import RunDirectory
    from improve_nas.adanet.ensemble_model import EnsembleModel
    from improve_nas.export import EXPORT_DIR, KERAS_FILE, export_final_ensemble

    data = toy_data()
    grow(tmp_path, generator=GrowingGenerator(), num_iterations=2)  # two candidates: an evaluator pass each time
    run_dir = RunDirectory(str(tmp_path))
    export_final_ensemble(run_dir, preprocessing=Scale(), image_shape=data.x_test.shape[1:])
    report.load_report(str(tmp_path))  # rebuilds report.json from the iterations' summaries
    with open(tmp_path / report.REPORT_JSON) as file:
        entries = json.load(file)["iterations"]
    assert [entry["iteration"] for entry in entries] == [0, 1]

    def check(recorded, logits, labels, what, bins=True):
        expected = reference_metrics(logits, labels)
        for key, value in {**expected, "error": 1 - expected["accuracy"], "loss": expected["nll"]}.items():
            assert recorded[key] == pytest.approx(value, abs=1e-5), (what, key)
        assert not bins or recorded["ece_bins"] == 15

    checked_own = []
    for entry in entries:
        frozen = run_dir.load_ensemble(entry["iteration"])
        names = [m.name for m in frozen.record.members]
        assert sorted(entry["member_metrics"]) == sorted(names)
        for name, member in zip(names, frozen.members):
            check(entry["member_metrics"][name], _logits(member, Scale()(data.x_test)), data.y_test, name)
            own = next(sub for sub in entry["subnetworks"] if sub["name"] == name) if name.startswith(
                f"t{entry['iteration']}_") else None
            if own is not None:  # the chosen candidate's own metrics, on the selection partition
                assert own["chosen"]
                checked_own.append(name)
                check(own, _logits(member, Scale()(data.x_select)), data.y_select, f"{name} (selection)", bins=False)
        ensemble = EnsembleModel(members=frozen.members, ensembler=frozen.ensembler, member_names=names,
                                 preprocessing=Scale())
        check(entry["ensemble"], keras.ops.convert_to_numpy(ensemble(data.x_test)["logits"]), data.y_test,
              f"ensemble {entry['iteration']}")
    assert len(checked_own) == 2  # one new chosen member per iteration
    exported = keras.saving.load_model(os.path.join(tmp_path, EXPORT_DIR, KERAS_FILE), compile=False)
    check(entries[-1]["ensemble"], keras.ops.convert_to_numpy(exported(data.x_test)["logits"]), data.y_test,
          "exported ensemble")
    for entry in entries:
        for sub in entry["subnetworks"]:
            assert all(sub[key] is not None for key in ("nll", "ece", "brier", "error")), sub["name"]
        assert "temperature_scaling" not in entry  # off by default


def _logits(member, images):
    import keras

    return keras.ops.convert_to_numpy(member(images, training=False)["logits"])


# ---- where the figures are shown: report tables (old runs without them still report) and TensorBoard ------------

def _entry(iteration, ensemble, members):
    return {"iteration": iteration, "members": list(members), "candidates": [], "chosen": f"t{iteration}_a_grow",
            "mixture_weights": [], "ensemble": ensemble, "member_metrics": members, "member_params": {},
            "trainable_params": 10, "train_seconds": 1.0, "global_step": 4 * (iteration + 1)}


OLD = {"accuracy": 0.5, "loss": 0.7}  # written before the calibration metrics
NEW = {"accuracy": 0.75, "error": 0.25, "loss": 0.6, "nll": 0.6, "ece": 0.125, "ece_bins": 15, "brier": 0.375}


def test_report_tables_show_the_calibration_and_a_dash_where_a_run_predates_it():
    from improve_nas import report

    built = report.build_report(dataset="digits", num_classes=3, iterations=[
        _entry(0, OLD, {"t0_a": OLD}), _entry(1, NEW, {"t0_a": NEW, "t1_a": NEW})])
    assert built["final"]["ece"] == 0.125 and built["final"]["ece_bins"] == 15 and built["final"]["brier"] == 0.375
    table = report.format_table(built).splitlines()
    assert "test ece (15 bins)" in table[1] and "test brier" in table[1]
    assert table[3].split()[3:7] == ["0.5000", "0.7000", "-", "-"]  # iteration 0: acc, nll, no ece, no brier
    assert table[4].split()[3:7] == ["0.7500", "0.6000", "0.1250", "0.3750"]
    assert table[-1].endswith("nll 0.6000, ece 0.1250 (15 bins), brier 0.3750")
    markdown = report.format_markdown(built)
    assert "| member | test accuracy | test NLL | test ECE (15 bins) | test Brier |" in markdown
    assert "| t0_a | 0.5000 | 0.7000 | - | - |" in markdown
    assert "| ensemble | 0.7500 | 0.6000 | 0.1250 | 0.3750 |" in markdown
    old_only = report.build_report(dataset="digits", num_classes=3, iterations=[_entry(0, OLD, {"t0_a": OLD})])
    assert "ece" not in old_only["final"] and "test ece " in report.format_table(old_only)


def test_tensorboard_gets_the_calibration_of_the_ensemble_and_each_member(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from improve_nas import summaries

    summaries.write_iteration_summary(str(tmp_path), _entry(0, NEW, {"t0_a": dict(NEW, ece=0.5)}))
    summaries.write_iteration_summary(str(tmp_path / "old"), _entry(0, OLD, {"t0_a": OLD}))  # no error
    found = {}
    for directory, _, files in os.walk(tmp_path):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
                for value in event.summary.value:
                    found[(os.path.relpath(directory, tmp_path), value.tag)] = float(tf.make_ndarray(value.tensor))
    assert found[(".", "eval/nll")] == pytest.approx(0.6) and found[(".", "eval/ece")] == pytest.approx(0.125)
    assert found[(".", "eval/brier")] == pytest.approx(0.375)
    assert found[("subnetwork/t0_a/eval", "ece")] == pytest.approx(0.5)
    assert found[("subnetwork/t0_a/eval", "nll")] == pytest.approx(0.6)
    assert found[("subnetwork/t0_a/eval", "brier")] == pytest.approx(0.375)
    assert ("old", "eval/nll") not in found and ("old", "accuracy") in found


# ---- temperature scaling -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factor", [3.0, 0.5])  # over- and under-confident logits
def test_fit_temperature_undoes_a_known_scaling_and_minimises_the_nll(factor):
    from improve_nas.adanet.calibration import fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    # labels drawn from softmax(true_logits): those logits are calibrated, so T fitted on factor x them is about factor
    probabilities = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in probabilities])
    temperature = fit_temperature(factor * true_logits, labels)
    assert temperature == pytest.approx(factor, rel=0.1)

    def nll(t):
        return classification_metrics(factor * true_logits / t, labels)["nll"]

    assert nll(temperature) <= min(nll(temperature * 0.99), nll(temperature * 1.01), nll(1.0))
    assert classification_metrics(factor * true_logits / temperature, labels)["ece"] < \
        classification_metrics(factor * true_logits, labels)["ece"]
    assert classification_metrics(factor * true_logits / temperature, labels)["accuracy"] == \
        classification_metrics(factor * true_logits, labels)["accuracy"]  # one scalar changes no argmax


@pytest.mark.multibackend
def test_temperature_scaling_is_fitted_on_the_selection_partition_reported_and_exported(tmp_path):
    import keras
    from toy_engine import Scale, grow, toy_data

    from improve_nas import report
    from improve_nas.adanet import RunDirectory
    from improve_nas.adanet.calibration import fit_temperature
    from improve_nas.adanet.ensemble_model import EnsembleModel
    from improve_nas.export import EXPORT_DIR, KERAS_FILE, export_final_ensemble

    data = toy_data()
    (summary,) = grow(tmp_path, num_iterations=1, temperature_scaling=True)
    run_dir = RunDirectory(str(tmp_path))
    frozen = run_dir.load_ensemble(0)
    ensemble = EnsembleModel(members=frozen.members, ensembler=frozen.ensembler,
                             member_names=[m.name for m in frozen.record.members], preprocessing=Scale())

    def logits(images):
        return keras.ops.convert_to_numpy(ensemble(images)["logits"]).astype(np.float64)

    scaled = summary["temperature_scaling"]
    temperature = fit_temperature(logits(data.x_select), data.y_select)
    assert scaled["temperature"] == pytest.approx(temperature, rel=1e-4) and scaled["temperature"] != 1.0
    for key, value in reference_metrics(logits(data.x_test), data.y_test).items():
        assert scaled["test_before"][key] == pytest.approx(value, abs=1e-5) == summary["ensemble"][key], key
    for key, value in reference_metrics(logits(data.x_test) / temperature, data.y_test).items():
        assert scaled["test_after"][key] == pytest.approx(value, abs=1e-5), key
    assert scaled["test_after"]["nll"] != pytest.approx(scaled["test_before"]["nll"], abs=1e-6)

    built = report.build_report(dataset="toy", num_classes=3, iterations=run_dir.summaries())
    assert built["final"]["temperature_scaling"] == scaled
    assert f"temperature scaling: T {temperature:.4f}" in report.format_table(built)

    export_final_ensemble(run_dir, preprocessing=Scale(), image_shape=data.x_test.shape[1:])
    exported = keras.saving.load_model(os.path.join(tmp_path, EXPORT_DIR, KERAS_FILE), compile=False)
    outputs = {key: keras.ops.convert_to_numpy(value) for key, value in exported(data.x_test).items()}
    np.testing.assert_allclose(outputs["logits"], logits(data.x_test) / scaled["temperature"], rtol=1e-5, atol=1e-5)
    probabilities = np.exp(outputs["logits"] - outputs["logits"].max(axis=1, keepdims=True))
    np.testing.assert_allclose(outputs["probabilities"], probabilities / probabilities.sum(axis=1, keepdims=True),
                               atol=1e-6)
    np.testing.assert_array_equal(outputs["classes"], logits(data.x_test).argmax(axis=1))

