"""The 2019 entry point `cd improve_nas && python -m trainer.trainer ...` runs.

With improve_nas/ as the working directory every top-level module and package of improve_nas/ is importable under
its bare name, so one named like an installed package (or a standard-library module) hides it from every library that
imports it: `improve_nas/tensorboard.py` once made `tf.summary` fail at the first summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "improve_nas"
# Imported by our dependencies, whether or not this environment has them (a JAX-only one lacks TensorFlow's).
KNOWN = {"tensorboard", "tensorflow", "tensorflow_datasets", "jax", "jaxlib", "keras", "numpy", "absl", "google",
         "h5py", "ml_dtypes", "optree", "rich", "namex", "packaging", "grpc", "requests"}


def _top_level_names() -> set[str]:
    names = {path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return names | {path.parent.name for path in PACKAGE.glob("*/__init__.py")}


def test_no_module_of_improve_nas_shares_a_name_with_an_installed_package():
    assert "trainer" in _top_level_names() and "run" in _top_level_names()
    assert str(PACKAGE) not in [os.path.abspath(entry) for entry in sys.path if entry]  # looked up from outside
    shadowing = {name: importlib.util.find_spec(name).origin for name in sorted(_top_level_names())
                 if importlib.util.find_spec(name) is not None}
    assert not shadowing, f"rename these modules of improve_nas/, they hide installed ones: {shadowing}"
    assert not _top_level_names() & KNOWN


@pytest.mark.slow
def test_2019_entry_point_trains_the_smoke_preset_from_inside_the_package(tmp_path):
    model_dir = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "trainer.trainer", "--preset=smoke", "--dataset=fake", f"--model_dir={model_dir}",
         "--tf_random_seed=3"], check=False, cwd=PACKAGE, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [entry["iteration"] for entry in json.loads((model_dir / "report.json").read_text())["iterations"]] == [0, 1]
