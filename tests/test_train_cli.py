"""End to end through the command line: the smoke preset trains, reports, exports, and a re-run adds nothing."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from smoke_run import SMOKE

pytestmark = pytest.mark.slow


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True, env=env, timeout=900,
                          **kwargs)


@pytest.fixture(scope="module")
def smoke_run(finished_smoke_run, tmp_path_factory):
    """A copy of the session's finished smoke run (smoke_run.py: `improve_nas.cli train` SMOKE) and its output."""
    original, result = finished_smoke_run
    return shutil.copytree(original, tmp_path_factory.mktemp("smoke") / "run"), result


def test_report_json_follows_the_contract(smoke_run):
    model_dir, result = smoke_run
    report = json.loads((model_dir / "report.json").read_text())
    assert report["dataset"] == "fake" and report["num_classes"] == 10
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1]
    for t, entry in enumerate(report["iterations"]):
        assert len(entry["members"]) == t + 1
        assert entry["chosen"] in [c["name"] for c in entry["candidates"]]
        assert set(entry["ensemble"]) >= {"accuracy", "loss"}
        assert set(entry["member_metrics"]) == set(entry["members"])
        assert entry["trainable_params"] > 0 and entry["train_seconds"] > 0
        assert len(entry["mixture_weights"]) == t + 1
    assert report["final"]["members"] == 2
    assert report["final"]["accuracy"] == report["iterations"][-1]["ensemble"]["accuracy"]
    # one progress line per finished iteration
    assert "iteration 1/2: chose" in result.stdout and "iteration 2/2: chose" in result.stdout


def test_run_directory_layout(smoke_run):
    model_dir, _ = smoke_run
    for name in ("config.json", "env.json", "report.json", "report.md", "iterations/0/architecture.json",
                 "iterations/1/architecture.json", "export/ensemble.keras", "export/saved_model"):
        assert (model_dir / name).exists(), name
    assert json.loads((model_dir / "env.json").read_text())["seed"] == 7
    events = [name for _, _, files in os.walk(model_dir / "tensorboard") for name in files]
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert (model_dir / "tensorboard" / "subnetwork").is_dir() and (model_dir / "tensorboard" / "ensemble").is_dir()
    # every new member's training loss is summarised under its own name, in each iteration
    members = sorted(os.listdir(model_dir / "tensorboard" / "subnetwork"))
    assert [name.split("_")[0] for name in members] == ["t0", "t1"]
    for name in members:
        assert {"loss", "learning_rate"} <= _event_tags(model_dir / "tensorboard" / "subnetwork" / name), name


def _event_tags(directory):
    import tensorflow as tf

    return {value.tag for path in directory.glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}


def test_exports_load_and_predict_raw_uint8_images(smoke_run):
    model_dir, _ = smoke_run
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3)).astype(np.uint8)
    script = (
        "import sys, numpy as np, keras, tensorflow as tf\n"
        "import improve_nas.serving\n"
        f"images = np.load({str(model_dir / 'images.npy')!r})\n"
        f"model = keras.saving.load_model({str(model_dir / 'export/ensemble.keras')!r})\n"
        "a = model.predict(images, verbose=0)\n"
        f"served = tf.saved_model.load({str(model_dir / 'export/saved_model')!r})\n"
        "b = served.serve(tf.constant(images))\n"
        "np.testing.assert_allclose(a['logits'], b['logits'].numpy(), rtol=1e-4, atol=1e-4)\n"
        "np.testing.assert_allclose(a['probabilities'].sum(-1), 1.0, rtol=1e-5)\n"
        "assert (a['classes'] == a['logits'].argmax(-1)).all() and a['logits'].shape == (5, 10)\n"
        "print('OK')\n")
    np.save(model_dir / "images.npy", images)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_rerun_of_a_finished_run_adds_nothing(smoke_run):
    model_dir, _ = smoke_run
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*") if "iterations" in p.parts}
    report = (model_dir / "report.json").read_text()
    result = _run(["improve_nas.trainer.trainer", *SMOKE, f"--model_dir={model_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already finished (2 iterations); nothing to do" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*") if "iterations" in p.parts} == before
    assert json.loads((model_dir / "report.json").read_text()) == json.loads(report)


def test_a_different_configuration_is_refused(smoke_run):
    model_dir, _ = smoke_run
    result = _run(["improve_nas.trainer.trainer", "--preset=smoke", "--dataset=fake", f"--model_dir={model_dir}",
                   "--hparams=num_conv_filters=6,label_smoothing=0.2"])
    assert result.returncode == 2
    assert "differing: label_smoothing, num_conv_filters" in result.stderr


def test_report_subcommand_prints_the_table(smoke_run):
    model_dir, _ = smoke_run
    result = _run(["improve_nas.cli", "report", str(model_dir)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dataset fake (10 classes)" and lines[-1].startswith("final: 2 members")
    assert len([line for line in lines if line[:1].isdigit()]) == 2


def test_mixed_bfloat16_run_trains_exports_float32_and_refuses_another_precision(tmp_path):
    model_dir = tmp_path / "run"
    flags = ["--preset=smoke", "--dataset=fake", f"--model_dir={model_dir}", "--tf_random_seed=7"]
    result = _run(["improve_nas.cli", "train", *flags, "--precision=mixed_bfloat16"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((model_dir / "config.json").read_text())["precision"] == "mixed_bfloat16"
    report = json.loads((model_dir / "report.json").read_text())
    assert report["final"]["members"] == 2 and np.isfinite(report["final"]["loss"])
    script = (
        "import glob, numpy as np, keras, tensorflow as tf\n"
        "import improve_nas.serving\n"
        f"root = {str(model_dir)!r}\n"
        "member = keras.saving.load_model(glob.glob(root + '/iterations/1/members/*.keras')[0])\n"
        "assert {l.dtype_policy.name for l in member._flatten_layers()} == {'mixed_bfloat16'}\n"
        "images = np.zeros((2, 32, 32, 3), np.uint8)\n"
        "a = keras.saving.load_model(root + '/export/ensemble.keras').predict(images, verbose=0)\n"
        "served = tf.saved_model.load(root + '/export/saved_model')  # kept: it owns the variables\n"
        "b = served.serve(tf.constant(images))\n"
        "assert a['logits'].dtype == np.float32 and b['logits'].dtype == tf.float32\n"
        "assert b['probabilities'].dtype == tf.float32\n"
        "np.testing.assert_allclose(a['logits'], b['logits'].numpy(), rtol=1e-3, atol=1e-3)\n"
        "print('OK')\n")
    check = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow"))
    assert check.returncode == 0 and "OK" in check.stdout, check.stderr[-3000:]
    refused = _run(["improve_nas.trainer.trainer", *flags, "--precision=float32"])
    assert refused.returncode == 2 and "differing: precision" in refused.stderr
