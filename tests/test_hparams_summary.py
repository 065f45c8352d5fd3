"""`improve-nas report --hparams_summary`: the run's settings and final test figures for TensorBoard's HParams view."""

import json
import os

import pytest
from toy_engine import grow

from improve_nas import cli
from improve_nas.hparams_summary import HPARAMS_DIR, run_hparams

tf = pytest.importorskip("tensorflow")


def read_summary(directory):
    """(hparams of the session start, {tag: (step, value)}) from the event files under `directory`."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, scalars = {}, {}
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        for key, held in data.session_start_info.hparams.items():
                            hparams[key] = getattr(held, held.WhichOneof("kind"))
                elif value.metadata.plugin_data.plugin_name == "scalars":
                    scalars[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    return hparams, scalars


def test_the_settings_and_final_figures_are_written(tmp_path, capsys):
    run = tmp_path / "run"
    grow(run, num_iterations=2)
    config = {"dataset": "digits", "model_dir": str(run), "train_steps": 8, "data_dir": None,
              "hparams": {"generator": "dynamic", "learn_mixture_weights": True, "weight_decay": 5e-4},
              "data_params": {"augmentation": "basic"}}
    (run / "config.json").write_text(json.dumps(config))
    assert cli.main(["report", str(run), "--hparams_summary"]) == 0
    report = json.loads((run / "report.json").read_text())
    hparams, scalars = read_summary(run / HPARAMS_DIR)
    assert hparams == {"dataset": "digits", "train_steps": 8, "hparams.generator": "dynamic",
                       "hparams.learn_mixture_weights": True, "hparams.weight_decay": 5e-4,
                       "data_params.augmentation": "basic"}
    final = report["final"]
    assert scalars["test/accuracy"] == (1, pytest.approx(final["accuracy"]))
    assert scalars["test/error"] == (1, pytest.approx(1 - final["accuracy"]))
    assert scalars["test/nll"] == (1, pytest.approx(final.get("nll", final["loss"])))


def test_places_and_non_scalars_are_left_out():
    assert run_hparams({"model_dir": "/x", "data_dir": "gs://b", "seed": None, "list": [1], "preset": "smoke",
                        "hparams": {"a": 1, "b": None}}) == {"preset": "smoke", "hparams.a": 1}


def test_a_gs_run_is_refused_before_anything_is_read():
    from improve_nas.errors import UsageError
    from improve_nas.hparams_summary import write_for_run

    with pytest.raises(UsageError, match="writes into a local run directory, not 'gs://bucket/run'"):
        write_for_run("gs://bucket/run")
