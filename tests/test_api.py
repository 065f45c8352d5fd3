"""The Python API: `improve_nas.grow` on a plain Keras CNN, `load_model`, `improve-nas predict`, `train`, and the
README's example as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import improve_nas
from improve_nas.adanet import GrowStrategy, Strategy, make_strategy
from improve_nas.data import load_dataset
from improve_nas.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40


def cnn(num_classes, input_shape):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_classes)])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def grown(digits, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("grow") / "run")
    result = improve_nas.grow(cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                              model_dir=model_dir, iterations=2, steps_per_iteration=STEPS, optimizer="adam",
                              initial_learning_rate=0.01, verbose=False)
    return result


def _cli(*args, check=True):
    completed = subprocess.run([sys.executable, "-m", "improve_nas.cli", *args], capture_output=True, text=True,
                               timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if check:
        assert completed.returncode == 0, completed.stderr
    return completed


def test_the_ensemble_predicts_the_test_images_with_the_reported_accuracy(grown, digits):
    classes = grown.ensemble.predict(digits.x_test, verbose=0)["classes"]
    correct = int(np.sum(classes == digits.y_test))
    assert correct == round(grown.report["final"]["accuracy"] * len(digits.y_test))
    assert grown.report["final"]["members"] == 2
    assert correct > len(digits.y_test) // 10  # it learned something


def test_rows_are_plain_dicts_one_per_iteration(grown):
    assert [row["iteration"] for row in grown.rows] == [0, 1]
    assert [row["members"] for row in grown.rows] == [1, 2]
    assert set(grown.rows[0]) == {"iteration", "members", "accuracy", "loss", "error", "nll", "ece", "brier", "params",
                                  "train_seconds"}
    assert grown.rows[1]["nll"] == grown.report["final"]["nll"] and grown.rows[1]["ece"] is not None
    assert grown.rows[1]["accuracy"] == grown.report["final"]["accuracy"]
    with open(os.path.join(grown.model_dir, "report.json")) as file:
        assert json.load(file) == json.loads(json.dumps(grown.report))


def test_improve_nas_report_reads_the_run_directory(grown):
    out = _cli("report", grown.model_dir).stdout
    assert "final: 2 members" in out and "t1_cnn_grow" in out


def test_grow_again_resumes_without_training(grown, digits, capsys):
    again = improve_nas.grow(cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                             model_dir=grown.model_dir, iterations=2, steps_per_iteration=STEPS, optimizer="adam",
                             initial_learning_rate=0.01)
    assert "2 of 2 iterations already finished" in capsys.readouterr().out
    assert again.report == grown.report


def test_grow_again_with_other_settings_is_refused(grown, digits):
    with pytest.raises(UsageError, match="differing: steps_per_iteration"):
        improve_nas.grow(cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                         model_dir=grown.model_dir, iterations=2, steps_per_iteration=STEPS + 1, optimizer="adam",
                         initial_learning_rate=0.01)


@pytest.mark.slow
def test_load_model_and_predict_in_fresh_processes(grown, digits, tmp_path):
    expected = grown.ensemble.predict(digits.x_test[:5], verbose=0)["classes"].tolist()
    code = ("import sys, numpy as np, improve_nas\n"
            "model = improve_nas.load_model(sys.argv[1])\n"
            "print(model.predict(np.load(sys.argv[2])['x'], verbose=0)['classes'].tolist())\n")
    images = tmp_path / "images.npz"
    np.savez(images, x=digits.x_test[:5])
    loaded = subprocess.run([sys.executable, "-c", code, grown.model_dir, str(images)], capture_output=True,
                            text=True, timeout=300, check=True)
    assert loaded.stdout.strip().splitlines()[-1] == str(expected)

    rows = _cli("predict", grown.model_dir, str(images)).stdout.strip().splitlines()
    assert rows[0].startswith("image,class,probability,p0") and len(rows) == 6
    assert [int(row.split(",")[1]) for row in rows[1:]] == expected
    out = tmp_path / "predictions.json"
    assert _cli("predict", grown.model_dir, str(images), "--format=json", f"--out={out}").stdout == ""
    predictions = json.loads(out.read_text())
    assert [p["class"] for p in predictions] == expected
    assert np.array(predictions[0]["probabilities"]).shape == (10,)


@pytest.mark.parametrize("images, said", [
    (np.zeros((3, 8, 8, 1), np.float32), "float32 [3, 8, 8, 1]"),
    (np.zeros((3, 8, 8), np.uint8), "uint8 [3, 8, 8]"),
    (np.zeros((3, 9, 9, 1), np.uint8), "uint8 [3, 9, 9, 1]"),
])
def test_predict_refuses_other_dtypes_and_shapes_in_one_line(grown, tmp_path, images, said):
    path = tmp_path / "bad.npy"
    np.save(path, images)
    completed = _cli("predict", grown.model_dir, str(path), check=False)
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and said in lines[0] and "uint8 images [N," in lines[0]


def test_a_model_that_cannot_be_reloaded_is_refused_before_training(digits, tmp_path):
    scale = 1 / 255  # a Python closure: a Lambda over it saves, but does not load in Keras' safe mode

    def closure_cnn(num_classes, input_shape):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Lambda(lambda x: x * scale),
                                 keras.layers.Flatten(), keras.layers.Dense(num_classes)])

    model_dir = tmp_path / "run"
    with pytest.raises(UsageError, match="cannot be saved and reloaded.*register_keras_serializable"):
        improve_nas.grow(closure_cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                         model_dir=str(model_dir), iterations=2, steps_per_iteration=2)
    assert not model_dir.exists()


class Unregistered(keras.Model):
    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Dense(num_classes)
        self.num_classes = num_classes

    def call(self, x):
        return self.head(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))


def test_an_unregistered_subclass_is_refused_before_training(digits, tmp_path):
    with pytest.raises(UsageError, match="cannot be saved and reloaded"):
        improve_nas.grow(lambda k, shape: Unregistered(k), digits.x_train, digits.y_train, digits.x_test,
                         digits.y_test, model_dir=str(tmp_path / "run"), iterations=1, steps_per_iteration=2)
    assert not (tmp_path / "run").exists()


def test_unknown_options_and_bad_arrays_are_one_line_errors(digits, tmp_path):
    args = (cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    with pytest.raises(UsageError, match=r"unknown option 'learn_mixture_weight'.*did you mean learn_mixture_weights"
                                         r".*valid options: .*adanet_lambda"):
        improve_nas.grow(*args, model_dir=str(tmp_path), learn_mixture_weight=True)
    with pytest.raises(UsageError, match="mixture_weight_type='cube' is invalid; choose one of: scalar"):
        improve_nas.grow(*args, model_dir=str(tmp_path), mixture_weight_type="cube")
    with pytest.raises(UsageError, match=r"x_train must be uint8 images \[N, H, W, C\].*float64 \[1437, 8, 8, 1\]"):
        improve_nas.grow(cnn, digits.x_train / 255.0, digits.y_train, digits.x_test, digits.y_test,
                         model_dir=str(tmp_path))
    with pytest.raises(UsageError, match="strategy must be a Strategy instance or one of grow"):
        improve_nas.grow(*args, model_dir=str(tmp_path), strategy=3)


class EveryOther(Strategy):
    """A custom strategy: the new member alone, named so the report shows it was used."""

    def generate_ensemble_candidates(self, builders, previous_ensemble):
        return [dataclass_replace(c, name=c.name.replace("_grow", "_custom"))
                for c in GrowStrategy().generate_ensemble_candidates(builders, previous_ensemble)]


def dataclass_replace(candidate, **changes):
    import dataclasses

    return dataclasses.replace(candidate, **changes)


def test_a_strategy_object_is_used_as_given(digits, tmp_path):
    strategy = EveryOther()
    assert make_strategy(strategy) is strategy
    result = improve_nas.grow(cnn, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                              model_dir=str(tmp_path / "run"), iterations=1, steps_per_iteration=2,
                              strategy=strategy, verbose=False)
    assert result.report["iterations"][0]["chosen"] == "t0_cnn_custom"


def test_the_engine_is_public_and_the_package_imports_no_keras():
    code = ("import sys, improve_nas, improve_nas.adanet as adanet\n"
            "names = [improve_nas.grow, improve_nas.train, improve_nas.load_model]\n"
            "assert 'keras' not in sys.modules, 'keras imported'\n"
            "from improve_nas.adanet import EngineSettings, Partitions, RunDirectory, grow_ensemble, "
            "load_final_ensemble\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_train_takes_the_cli_settings_and_checks_them(tmp_path):
    with pytest.raises(UsageError, match="train needs model_dir"):
        improve_nas.train("smoke")
    with pytest.raises(UsageError, match="unknown config key 'train_step'"):
        improve_nas.train("smoke", model_dir=str(tmp_path), train_step=3)
    with pytest.raises(UsageError, match="unknown hparam 'num_cell'"):
        improve_nas.train("smoke", model_dir=str(tmp_path), hparams={"num_cell": 3})
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_train_runs_the_smoke_preset_into_the_clis_run_directory(tmp_path):
    report = improve_nas.train("smoke", model_dir=str(tmp_path / "run"), train_steps=2, tf_random_seed=1,
                               hparams={"boosting_iterations": 1})
    assert report["final"]["members"] == 1
    assert (tmp_path / "run" / "config.json").exists() and (tmp_path / "run" / "export" / "ensemble.keras").exists()


@pytest.mark.slow
def test_the_readme_python_api_example_runs_as_written(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        section = file.read().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "'iteration': 1, 'members': 2" in completed.stdout
    assert (tmp_path / "runs" / "digits_cnn" / "export" / "ensemble.keras").exists()
