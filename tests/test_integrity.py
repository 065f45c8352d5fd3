"""Damaged run directories end in one line naming the file and the way out, a fallback or a rebuild; never a
traceback, never exit 0 with the damage left.

The engine cases run in process on the tiny Dense subnetworks of toy_engine.py (one finished 2-iteration run,
copied per case); the command-line cases damage a copy of one finished `smoke` run and rerun `train` or `report`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
from smoke_run import SMOKE
from smoke_run import improve_nas_cli as cli
from toy_engine import SETTINGS, DenseGenerator, toy_data

from improve_nas.adanet.runtime import checkpoints
from improve_nas.adanet.runtime.engine import grow_ensemble
from improve_nas.adanet.runtime.run_directory import RunDirectory
from improve_nas.storage import integrity
from improve_nas.storage.integrity import DamagedRunError

TWO = dataclasses.replace(SETTINGS, num_iterations=2, iteration_steps=2)


def grow(path, settings=TWO):
    return grow_ensemble(run_dir=RunDirectory(str(path)), settings=settings, generator=DenseGenerator(),
                         data=toy_data(), make_preprocessing=lambda seed: keras.layers.Identity())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    path = tmp_path_factory.mktemp("dense") / "run"
    grow(path)
    return path


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished 2-iteration run."""
    return shutil.copytree(finished, tmp_path / "run")


def member(run, iteration):
    [name] = os.listdir(run / "iterations" / str(iteration) / "members")
    return run / "iterations" / str(iteration) / "members" / name


def truncate(path, keep=100):
    with open(path, "r+b") as stream:
        stream.truncate(keep)


def garble(path):
    path.write_bytes(b"\x00garbled" + path.read_bytes()[8:])


def one_line_error(call) -> str:
    with pytest.raises(DamagedRunError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_published_iterations_list_every_file_with_size_and_checksum(finished):
    manifest = json.loads((finished / "iterations" / "1" / integrity.MANIFEST).read_text())
    path = member(finished, 1)
    assert sorted(manifest["files"]) == ["architecture.json", f"members/{path.name}", "pool/logits.npz",
                                         "summary.json"]
    entry = manifest["files"][f"members/{path.name}"]
    assert entry == {"size": path.stat().st_size, "sha256": integrity.sha256(str(path))}


def test_a_truncated_member_is_named_with_its_sizes_and_what_to_delete(run):
    path = member(run, 0)
    size = path.stat().st_size
    truncate(path)
    message = one_line_error(lambda: grow(run, dataclasses.replace(TWO, num_iterations=3)))
    assert message.startswith(f"{path} is damaged (size 100, expected {size}): delete {run}/iterations/0 and the "
                              "later iterations 1")


@pytest.mark.parametrize("name", ["architecture.json", "summary.json"])
def test_a_garbled_json_file_of_an_iteration_is_named(run, name):
    path = run / "iterations" / "1" / name
    path.write_text(path.read_text().replace("0", "1", 1))  # same size, other content
    message = one_line_error(lambda: grow(run))
    assert message.startswith(f"{path} is damaged (its checksum differs")
    assert f"delete {run}/iterations/1 and rerun" in message


def test_a_missing_iteration_before_a_later_one_is_named(run):
    shutil.rmtree(run / "iterations" / "0")
    message = one_line_error(lambda: grow(run, dataclasses.replace(TWO, num_iterations=3)))
    assert message.startswith(f"{run}/iterations/0 is missing")
    assert "later iterations 1" in message


def test_a_run_written_before_manifests_resumes_and_its_unreadable_files_are_one_line(run):
    for t in (0, 1):
        os.remove(run / "iterations" / str(t) / integrity.MANIFEST)
    backup = run.parent / "backup"
    shutil.copytree(run, backup)
    assert len(grow(run, dataclasses.replace(TWO, num_iterations=3))) == 3  # loaded unverified

    (backup / "iterations" / "1" / "architecture.json").write_text("{garbled")
    assert "architecture.json is damaged (not JSON" in one_line_error(lambda: grow(backup))
    (backup / "iterations" / "1" / "architecture.json").write_text("{}")
    assert "architecture.json is damaged (no valid ensemble" in one_line_error(
        lambda: RunDirectory(str(backup)).load_ensemble(1))
    shutil.rmtree(backup / "iterations" / "1")
    truncate(member(backup, 0))
    assert "cannot be loaded" in one_line_error(lambda: grow(backup))


def test_checkpoints_of_finished_iterations_are_removed_at_start(run, capsys):
    for t in (0, 1, 2):  # 0, 1 published (a kill right after publishing), 2 in progress: kept
        os.makedirs(run / "checkpoints" / str(t))
        (run / "checkpoints" / str(t) / "ckpt-2.npz").write_bytes(b"state")
    grow(run)
    assert os.listdir(run / "checkpoints") == ["2"]
    assert f"removed {run}/checkpoints/0" in capsys.readouterr().out


def _model():
    keras.backend.clear_session()  # the same variable paths in every model
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys):
    model = _model()
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    checkpoints.save(str(tmp_path), model, step=1, keep=5)
    saved = [v.numpy().copy() for v in model.weights]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    checkpoints.save(str(tmp_path), model, step=2, keep=5)
    truncate(tmp_path / "ckpt-2.npz")

    fresh = _model()
    assert checkpoints.restore_latest(str(tmp_path), fresh) == 1
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(saved, fresh.weights))
    out = capsys.readouterr().out.strip()
    assert out == (f"checkpoint {tmp_path}/ckpt-2.npz is damaged (BadZipFile: File is not a zip file); deleted it, "
                   "resuming from ckpt-1.npz")
    assert checkpoints.steps(str(tmp_path)) == [1]

    garble(tmp_path / "ckpt-1.npz")
    assert checkpoints.restore_latest(str(tmp_path), _model()) == 0
    assert "no intact checkpoint left: training the iteration from step 0" in capsys.readouterr().out


# --- the command line, on one finished smoke run -------------------------------------------------------------------

@pytest.fixture
def smoke_run(finished_smoke_run, tmp_path):
    """A copy of the session's finished smoke run (smoke_run.py)."""
    return shutil.copytree(finished_smoke_run[0], tmp_path / "run")


def refused(done, path) -> str:
    """The one error line of a run that exited 2 naming `path`."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert f"{path} " in line
    return line


@pytest.mark.slow
def test_cli_a_finished_run_with_a_garbled_architecture_or_a_truncated_member_is_refused(smoke_run):
    path = smoke_run / "iterations" / "1" / "architecture.json"
    path.write_text(path.read_text().replace('"iteration": 1', '"iteration": 7'))
    line = refused(cli("train", *SMOKE, f"--model_dir={smoke_run}"), path)
    assert f"delete {smoke_run}/iterations/1 and rerun" in line
    refused(cli("report", str(smoke_run)), path)

    shutil.rmtree(smoke_run / "iterations" / "1")
    truncate(member(smoke_run, 0))
    refused(cli("train", *SMOKE, f"--model_dir={smoke_run}"), member(smoke_run, 0))


@pytest.mark.slow
def test_cli_a_finished_run_with_a_truncated_export_exports_again(smoke_run):
    path = smoke_run / "export" / "ensemble.keras"
    truncate(path)
    done = cli("train", *SMOKE, f"--model_dir={smoke_run}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{path} is damaged (size 100, expected" in done.stdout
    assert integrity.check_manifest(str(smoke_run / "export"), way_out="")

    from improve_nas.export import check_export

    assert check_export(RunDirectory(str(smoke_run))) is None
    os.remove(smoke_run / "export" / "saved_model" / "fingerprint.pb")  # a missing SavedModel file: exported again
    assert check_export(RunDirectory(str(smoke_run))) == \
        f"{smoke_run}/export/saved_model/fingerprint.pb is missing: exporting again"


@pytest.mark.slow
def test_cli_damaged_config_and_env_are_one_line(smoke_run):
    config = smoke_run / "config.json"
    original = config.read_text()
    config.write_text(original[:40])
    line = refused(cli("train", *SMOKE, f"--model_dir={smoke_run}"), config)
    assert "delete it and rerun with the run's original flags" in line

    config.write_text(original)
    garble(smoke_run / "env.json")  # read for the seed when no --tf_random_seed is given
    line = refused(cli("train", "--preset=smoke", "--dataset=fake", f"--model_dir={smoke_run}"),
                   smoke_run / "env.json")
    assert "--tf_random_seed=" in line


@pytest.mark.slow
def test_cli_report_rebuilds_a_damaged_or_missing_report(smoke_run):
    report = smoke_run / "report.json"
    original = json.loads(report.read_text())
    report.write_text(report.read_text()[:50])
    done = cli("report", str(smoke_run), "--format=json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == original == json.loads(report.read_text())
    assert f"{report} is damaged (not JSON): rebuilt from the iterations' summary.json files" in done.stderr

    os.remove(report)
    os.remove(smoke_run / "report.md")
    done = cli("report", str(smoke_run), "--format=json")
    assert done.returncode == 0 and json.loads(done.stdout) == original
    assert json.loads(report.read_text()) == original and (smoke_run / "report.md").exists()
