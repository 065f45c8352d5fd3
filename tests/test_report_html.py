"""`improve-nas report --format=html`: one self-contained page with its figures embedded and written beside it."""

import base64
import json
import os
import re
import struct

import numpy as np
import pytest
from toy_engine import GrowingGenerator, grow

from improve_nas import cli, report_plots
from improve_nas.report_html import PLOTS_DIR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished 3-iteration toy run (two candidates an iteration, so each has a selection loss); no config.json
    and no export, as a `grow` run through the Python API leaves it."""
    path = tmp_path_factory.mktemp("toy") / "run"
    grow(path, generator=GrowingGenerator())
    return path


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a PNG must start with."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_the_page_embeds_every_figure_names_every_iteration_and_writes_the_pngs(toy_run, tmp_path, capsys):
    out = tmp_path / "page" / "run.html"
    assert cli.main(["report", str(toy_run), "--format=html", f"--out={out}"]) == 0
    page = out.read_text()
    images = embedded_images(page)
    files = sorted((tmp_path / "page" / PLOTS_DIR).iterdir())
    # a, b (members, params, time), c (mixture weights), d (candidates); no reliability diagram without the data
    assert [f.name for f in files] == ["by_members.png", "by_params.png", "by_train_time.png", "candidates.png",
                                       "mixture_weights.png"]
    assert len(images) == len(files)
    assert sorted(images) == sorted(f.read_bytes() for f in files)
    for image in images:
        width, height = png_size(image)
        assert width >= 300 and height >= 200
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)  # nothing external
    for t in range(3):
        assert f"Iteration {t}:" in page
    assert "No reliability diagram: the run directory has no config.json" in page
    report = json.loads((toy_run / "report.json").read_text())
    for entry in report["iterations"]:
        assert entry["chosen"] in page
    assert f"{report['final']['accuracy']:.4f}" in page
    assert str(out) in capsys.readouterr().out


def test_the_default_page_is_in_the_run_directory(toy_run, tmp_path):
    run = tmp_path / "copy"
    import shutil

    shutil.copytree(toy_run, run)
    assert cli.main(["report", str(run), "--format=html"]) == 0
    assert (run / "report.html").is_file() and (run / PLOTS_DIR / "by_members.png").is_file()


def test_calibration_and_stop_reason_are_shown_when_the_report_holds_them():
    from improve_nas.report_html import render_page

    metrics = {"accuracy": 0.75, "loss": 0.9, "nll": 0.9, "error": 0.25, "ece": 0.05, "ece_bins": 15, "brier": 0.3}
    entry = {"iteration": 0, "chosen": "t0_a_grow", "members": ["t0_a"], "ensemble": metrics,
             "member_metrics": {"t0_a": metrics}, "mixture_weights": [[0.5, 1.5]], "trainable_params": 10,
             "train_seconds": 1.0, "candidates": [{"name": "t0_a_grow", "selection_loss": 0.8}]}
    report = {"dataset": "digits", "num_classes": 10, "iterations": [entry],
              "final": dict(metrics, members=1), "stopped": {"reason": "early_stopping", "detail": "no gain"}}
    page = render_page("run", report, [], [])
    assert "final test ECE</th><td>0.0500" in page and "final test NLL</th><td>0.9000" in page
    assert "early_stopping: no gain" in page and "25.00 %" in page
    assert "<td>1.0000</td>" in page  # the vector weight's mean
    assert report_plots.nll_label(report) == "test NLL"
    assert report_plots.nll_label({"iterations": [dict(entry, ensemble={"accuracy": 1, "loss": 2})]}).endswith(
        "= NLL)")


def test_reliability_bins_count_every_example_and_make_the_ece():
    probabilities = np.array([[0.95, 0.05], [0.9, 0.1], [0.55, 0.45], [0.42, 0.58]])
    labels = np.array([0, 1, 0, 1])
    bins = report_plots.reliability_bins(probabilities, labels, bins=10)
    assert sum(bins["counts"]) == 4 and bins["counts"][9] == 2 and bins["counts"][5] == 2
    assert bins["accuracy"][9] == 0.5 and bins["accuracy"][5] == 1.0
    assert np.isnan(bins["accuracy"][0])
    # |0.5 - 0.925| * 2/4 + |1.0 - 0.565| * 2/4
    assert bins["ece"] == pytest.approx(0.2125 + 0.2175)
    width, height = png_size(report_plots.reliability_figure(bins).png)
    assert width > 0 and height > 0


@pytest.mark.parametrize("args, words", [
    (["--format=htm"], "invalid choice: 'htm'"),
    (["--format=html", "--out={run}/report.json/page.html"], "cannot be created"),
    (["--format=html", "--out=gs://bucket/report.html"], "local file"),
    (["--out=x.html"], "--out='x.html' is for --format=html"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, words, toy_run, tmp_path, capsys):
    before = sorted(os.listdir(toy_run))
    assert cli.main(["report", str(toy_run), *[arg.format(run=toy_run) for arg in args]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert sorted(os.listdir(toy_run)) == before


def test_a_gs_run_needs_out(capsys):
    assert cli.main(["report", "gs://bucket/run", "--format=html"]) == 2
    assert "give --out=PATH, a local file" in capsys.readouterr().err


def test_a_gs_run_directory_gives_the_same_page_and_comparison(toy_run, gcs_emulator, tmp_path, capsys):
    from improve_nas.storage import gcs

    url = f"gs://{gcs_emulator.bucket}/runs/toy"
    for path in toy_run.rglob("*"):
        if path.is_file():
            gcs.upload_file(str(path), f"{url}/{path.relative_to(toy_run).as_posix()}")
    out = tmp_path / "gs.html"
    assert cli.main(["report", url, "--format=html", f"--out={out}"]) == 0
    page = out.read_text()
    assert len(embedded_images(page)) == 5 and all(f"Iteration {t}:" in page for t in range(3))
    capsys.readouterr()
    assert cli.main(["compare", url, str(toy_run), "--format=json"]) == 0
    gs_row, local_row = json.loads(capsys.readouterr().out)
    assert gs_row["run"] == url and {**gs_row, "run": ""} == {**local_row, "run": ""}


def test_the_reliability_diagram_is_the_exported_ensembles_on_the_test_data_config_json_names(tmp_path, capsys):
    """A run grown through the Python API on arrays saved as an npz data set, its config.json naming them: the
    diagram's bins are those of the export's own predictions on that data set's test partition."""
    import keras
    from toy_engine import toy_data

    import improve_nas
    from improve_nas.config import Config
    from improve_nas.report_html import final_reliability

    data = toy_data()
    archive = tmp_path / "toy.npz"
    np.savez(archive, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    run = tmp_path / "run"

    def dense(num_classes, input_shape):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                                 keras.layers.Dense(num_classes)])

    improve_nas.grow(dense, data.x_train, data.y_train, data.x_test, data.y_test, model_dir=str(run), iterations=2,
                     steps_per_iteration=4, batch_size=16, verbose=False)
    (run / "config.json").write_text(json.dumps(Config(dataset=f"npz:{archive}").to_dict()))
    probabilities = improve_nas.load_model(str(run)).predict(data.x_test, verbose=0)["probabilities"]
    expected = report_plots.reliability_bins(np.asarray(probabilities, dtype=np.float64), data.y_test)
    bins, why_not = final_reliability(str(run), bins=report_plots.RELIABILITY_BINS)
    assert why_not == "" and bins["counts"] == expected["counts"] and sum(bins["counts"]) == len(data.y_test)
    assert bins["ece"] == pytest.approx(expected["ece"])
    assert cli.main(["report", str(run), "--format=html"]) == 0
    page = (run / "report.html").read_text()
    assert (run / PLOTS_DIR / "reliability.png").is_file() and 'alt="reliability"' in page
    assert "No reliability diagram" not in page
