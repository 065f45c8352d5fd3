"""Training with model_dir on gs://, against a real local GCS emulator (nothing leaves 127.0.0.1).

One smoke run trains into gs://b/run from a subprocess; the tests check what the bucket then holds and in which order
it was uploaded, what a rerun from an empty working copy does, and that bad input writes nothing. (test_preemption.py stops a gs:// run with SIGTERM and resumes it from the bucket.)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from gcs_emulator import running_emulator

from improve_nas import run
from improve_nas.errors import UsageError
from improve_nas.presets import resolve_config
from improve_nas.storage import gcs, run_location

pytestmark = pytest.mark.slow

RUN = "gs://b/run"
LOGS = "gs://b/logs"


def _train(args, env):
    return subprocess.run([sys.executable, "-m", "improve_nas.trainer.trainer", "--preset=smoke", "--dataset=fake",
                           "--tf_random_seed=7"] + args, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """An emulator for the whole module, STORAGE_EMULATOR_HOST set here and for subprocesses."""
    with running_emulator() as emulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
        patch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
        tmpdir = str(tmp_path_factory.mktemp("tmp"))  # the working copies go there, in subprocesses and here
        patch.setenv("TMPDIR", tmpdir)
        patch.setattr(tempfile, "tempdir", tmpdir)
        yield emulator


@pytest.fixture(scope="module")
def cloud_run(bucket):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", AIP_TENSORBOARD_LOG_DIR=LOGS)
    result = _train([f"--model_dir={RUN}"], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def objects(url):
    prefix = url.rstrip("/") + "/"
    return {obj.url[len(prefix):] for obj in gcs.list_blobs(prefix)}


def test_the_bucket_holds_the_whole_run_directory(cloud_run):
    names = objects(RUN)
    for name in ("config.json", "env.json", "report.json", "report.md", "iterations/0/architecture.json",
                 "iterations/0/summary.json", "iterations/1/architecture.json", "export/ensemble.keras",
                 "export/saved_model/saved_model.pb"):
        assert name in names, name
    assert {name.split("/")[2] for name in names if name.startswith("iterations/")} == {
        "architecture.json", "summary.json", "manifest.json", "members", "pool"}
    assert not [name for name in names if name.startswith("checkpoints/")]  # dropped once iterations finished
    assert not [name for name in names if any(part.startswith(".") for part in name.split("/"))]
    report = json.loads(gcs.read_bytes(f"{RUN}/report.json"))
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1]
    assert [len(entry["members"]) for entry in report["iterations"]] == [1, 2]
    assert json.loads(gcs.read_bytes(f"{RUN}/config.json"))["model_dir"] == RUN
    assert json.loads(gcs.read_bytes(f"{RUN}/env.json"))["seed"] == 7


def test_tensorboard_event_files_also_go_to_aip_tensorboard_log_dir(cloud_run):
    events = {name for name in objects(RUN) if name.startswith("tensorboard/")}
    assert any("/events.out.tfevents" in name for name in events)
    assert objects(LOGS) == {name[len("tensorboard/"):] for name in events}


def test_an_iteration_is_marked_finished_only_after_all_its_files_are_uploaded(cloud_run):
    # An object's generation is the time its upload completed (when readers start to see it).
    bucket, prefix = gcs.parse_gs_url(RUN + "/")
    uploaded = {blob.name[len(prefix):]: blob.generation
                for blob in gcs.storage_client().list_blobs(bucket, prefix=prefix)}
    for t in (0, 1):
        marker = uploaded[f"iterations/{t}/architecture.json"]
        others = [generation for name, generation in uploaded.items()
                  if name.startswith(f"iterations/{t}/") and not name.endswith("/architecture.json")]
        # the member, the pool's logits, the summary and the manifest came first
        assert len(others) == 4 and max(others) < marker


def test_a_rerun_on_a_fresh_machine_pulls_the_run_and_finds_it_finished(cloud_run):
    working_copy = run_location.working_copy_dir(RUN)
    assert os.path.isdir(working_copy)
    report = gcs.read_bytes(f"{RUN}/report.json")
    shutil.rmtree(working_copy)
    result = _train([f"--job-dir={RUN}"], dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run in {RUN} already finished (2 iterations); nothing to do" in result.stdout
    assert json.loads(gcs.read_bytes(f"{RUN}/report.json")) == json.loads(report)
    assert os.path.exists(os.path.join(working_copy, "iterations", "1", "architecture.json"))


def test_a_different_configuration_is_refused_from_the_bucket_copy(cloud_run, tmp_path, monkeypatch):
    before = {obj.url: obj.md5 for obj in gcs.list_blobs(RUN)}
    config = resolve_config(preset="smoke", flags=dict(model_dir=RUN, dataset="fake"),
                            hparams="num_conv_filters=6")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a fresh machine: only the bucket knows the config
    with pytest.raises(UsageError, match="differing: num_conv_filters"):
        run.train(config)
    assert {obj.url: obj.md5 for obj in gcs.list_blobs(RUN)} == before
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("model_dir, message", [
    ("gs://missing/run", "bucket 'missing' does not exist"),
    ("gs://Bad/run", "invalid bucket 'Bad'"),
    ("s3://b/run", "unsupported scheme 's3'; use a local path or gs://BUCKET/PATH"),
])
def test_bad_model_dirs_are_refused_before_anything_is_written(bucket, tmp_path, monkeypatch, model_dir, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        run.train(resolve_config(preset="smoke", flags=dict(model_dir=model_dir, dataset="fake")))
    assert os.listdir(tmp_path) == []


def test_bad_input_on_a_gs_model_dir_writes_nothing(bucket, tmp_path, monkeypatch):
    before = {obj.url for obj in gcs.list_blobs("gs://b/")}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(UsageError, match="npz"):
        run.train(resolve_config(preset="smoke", flags=dict(model_dir="gs://b/new", dataset="npz:/missing.npz")))
    assert {obj.url for obj in gcs.list_blobs("gs://b/")} == before
    assert os.listdir(tmp_path) == []
