"""A run's settings and final test figures as a TensorBoard HParams summary, so TensorBoard's HParams dashboard
lists runs side by side (point `tensorboard --logdir` at a folder holding several run directories).

Written to `MODEL_DIR/tensorboard/hparams/` (its own directory, so the training curves' directories stay as they are):
every scalar of config.json (the hparams and data params prefixed `hparams.` and `data_params.`; `model_dir` and
`data_dir` left out, they name places, not settings) as hparams, and the final ensemble's test accuracy, error,
NLL (an older report's `loss`, the same mean cross-entropy), ECE and Brier score (when recorded) as metrics, at the
step of the last finished iteration. Needs TensorFlow and TensorBoard, as the other summaries do.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

from improve_nas.errors import UsageError

HPARAMS_DIR = os.path.join("tensorboard", "hparams")
PLACES = ("model_dir", "data_dir")  # config.json keys that name where a run is, not how it was trained


def run_hparams(config: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """config.json flattened to HParams' value types; None and non-scalar values left out."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        if key in PLACES:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": inner for name, inner in value.items() if _scalar(inner)})
        elif _scalar(value):
            flat[key] = value
    return flat


def _scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def final_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The final ensemble's test figures, by the tag they are written under."""
    final = report.get("final") or {}
    if not final:
        return {}
    metrics = {"test/accuracy": final["accuracy"], "test/error": final.get("error", 1 - final["accuracy"]),
               "test/nll": final.get("nll", final["loss"])}
    metrics.update({f"test/{key}": final[key] for key in ("ece", "brier") if final.get(key) is not None})
    return {tag: float(value) for tag, value in metrics.items()}


def write_for_run(model_dir: str) -> str:
    """Writes the summary of the local run directory `model_dir` from its report and config.json."""
    from improve_nas.report import load_report
    from improve_nas.storage import gcs

    if gcs.is_gs_url(model_dir) or "://" in model_dir:
        raise UsageError(f"--hparams_summary writes into a local run directory, not {model_dir!r}")
    if not all(importlib.util.find_spec(name) for name in ("tensorflow", "tensorboard")):
        raise UsageError("--hparams_summary needs TensorFlow and TensorBoard, which are not installed here")
    report = load_report(model_dir)
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as stream:
            config = json.load(stream)
    except FileNotFoundError:
        config = {}  # a Python API run: the metrics alone
    except ValueError:
        raise UsageError(f"{os.path.join(model_dir, 'config.json')} is damaged (not JSON)") from None
    return write_hparams_summary(model_dir, report, config if isinstance(config, dict) else {})


def write_hparams_summary(model_dir: str, report: dict[str, Any], config: dict[str, Any]) -> str:
    """Writes the summary of a local run directory; returns its directory."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    directory = os.path.join(model_dir, HPARAMS_DIR)
    metrics = final_metrics(report)
    step = report["iterations"][-1]["iteration"] if report["iterations"] else 0
    writer = tf.summary.create_file_writer(directory)
    with writer.as_default():
        hp.hparams(run_hparams(config), trial_id=os.path.basename(os.path.abspath(model_dir)))
        for tag, value in metrics.items():
            tf.summary.scalar(tag, value, step=step)
    writer.close()
    return directory
