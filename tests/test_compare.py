"""`improve-nas compare RUN_DIR ...`: one row per run, in text, CSV or JSON."""

import csv
import io
import json

import pytest
from toy_engine import grow

from improve_nas import cli
from improve_nas.report import load_report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished toy runs of different lengths; the second with a config.json and a stop reason, as a run
    trained by the command line with early stopping has (the settings are read from the file)."""
    root = tmp_path_factory.mktemp("compare")
    grow(root / "a", num_iterations=1)
    grow(root / "b", num_iterations=2)
    (root / "b" / "config.json").write_text(json.dumps({"preset": "smoke", "train_steps": 8, "hparams": {
        "generator": "dynamic", "candidates_per_iteration": 2}}))
    for run in ("a", "b"):
        load_report(str(root / run))  # writes report.json, as training does
    return root / "a", root / "b"


def compare(capsys, *args):
    assert cli.main(["compare", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_json_has_a_row_per_run_with_its_final_ensemble(runs, capsys):
    a, b = runs
    rows = json.loads(compare(capsys, a, b, "--format=json"))
    assert [row["run"] for row in rows] == [str(a), str(b)]
    assert [row["members"] for row in rows] == [1, 2]
    for run, row in zip(runs, rows):
        report = json.loads((run / "report.json").read_text())
        assert row["accuracy"] == report["final"]["accuracy"]
        assert row["error"] == pytest.approx(1 - report["final"]["accuracy"])
        assert row["nll"] == report["final"].get("nll", report["final"]["loss"])
        assert row["params"] == report["iterations"][-1]["trainable_params"]
        assert row["train_seconds"] == pytest.approx(sum(e["train_seconds"] for e in report["iterations"]), abs=1e-3)
    assert rows[0]["generator"] is None and rows[1]["generator"] == "dynamic"
    assert rows[1]["candidates_per_iteration"] == 2 and rows[1]["preset"] == "smoke"


def test_text_and_csv_show_the_same_runs(runs, capsys):
    a, b = runs
    text = compare(capsys, a, b).splitlines()
    assert text[0].split()[:4] == ["run", "dataset", "members", "accuracy"]
    assert len(text) == 4 and text[2].startswith(str(a)) and text[3].startswith(str(b))
    assert "dynamic" in text[3] and "generator" in text[0]
    rows = list(csv.DictReader(io.StringIO(compare(capsys, a, a, "--format=csv"))))
    assert len(rows) == 2 and rows[0] == rows[1] and rows[0]["members"] == "1" and rows[0]["generator"] == ""


def test_the_stop_reason_and_calibration_figures_are_read_when_present(runs, capsys, tmp_path):
    import shutil

    run = shutil.copytree(runs[1], tmp_path / "run")
    report = json.loads((run / "report.json").read_text())
    report["final"].update(nll=0.5, ece=0.04, brier=0.2)
    report["stopped"] = {"reason": "early_stopping", "after_iteration": 1}
    (run / "report.json").write_text(json.dumps(report))
    [row] = json.loads(compare(capsys, run, "--format=json"))
    assert (row["nll"], row["ece"], row["brier"], row["stopped"]) == (0.5, 0.04, 0.2, "early_stopping")


@pytest.mark.parametrize("bad, words", [("empty", "no report.json in '{path}'"), ("format", "did you mean csv?")])
def test_bad_input_is_one_line_exit_2(runs, tmp_path, capsys, bad, words):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [runs[0], empty] if bad == "empty" else [runs[0], "--format=cvs"]
    assert cli.main(["compare", *map(str, args)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert words.format(path=empty) in captured.err
