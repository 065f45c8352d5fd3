"""One finished `smoke` run, trained through the command line once per test session (about a minute on 2 cores).

A pytest plugin (conftest.py registers it). The modules that check a training's output, read a finished run, or damage
a copy of it share this one instead of training their own (test_cli_ux, test_train_cli, test_integrity). It runs as a
user would: the installed `improve-nas` console script (`python -m improve_nas.cli` where it is not installed), with
TF_CPP_MIN_LOG_LEVEL unset. None may change the run, so each test that does works on a copy:

    def test_something(finished_smoke_run, tmp_path):
        original, completed = finished_smoke_run  # its directory, and the training's CompletedProcess
        model_dir = shutil.copytree(original, tmp_path / "run")  # file times kept
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

SMOKE = ["--preset=smoke", "--dataset=fake", "--tf_random_seed=7"]


def improve_nas_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m improve_nas.cli ARGS`, quiet TensorFlow, output captured as text (for reruns on a copy)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "improve_nas.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="session")
def finished_smoke_run(tmp_path_factory):
    """(the run directory, the CompletedProcess of `improve-nas train` SMOKE): read it, or copy it to change it."""
    model_dir = tmp_path_factory.mktemp("smoke") / "run"
    console_script = shutil.which("improve-nas")
    command = [console_script] if console_script else [sys.executable, "-m", "improve_nas.cli"]
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run([*command, "train", *SMOKE, f"--model_dir={model_dir}"], capture_output=True,
                               text=True, env=env, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return model_dir, completed
