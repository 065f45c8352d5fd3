"""Mid-iteration checkpoints: everything needed to continue an iteration at the same step.

A checkpoint holds the values of the iteration model's own variables (candidates, mixture weights, batch-norm
statistics, drop-path step counters, RNG seed states, EMAs), the optimizer's (step counter, hence the learning-rate
position, and slots) and the metrics'. The frozen previous members are left out (they live, read-only, in their
finished iterations' directories), and so is the training data a model may hold on the device. Files are
`ckpt-<step>.npz` in one directory per iteration, written atomically; only the newest `keep` survive.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib

import keras
import numpy as np

from improve_nas.adanet.runtime.device_data import variables_to_skip
from improve_nas.storage import fileio

_TRAIN_SECONDS = "train_seconds"
_NAME = re.compile(r"^ckpt-(\d+)\.npz$")


def _state_variables(model: keras.Model) -> list:
    frozen = {id(v) for member in getattr(model, "previous_members", []) for v in member.variables}
    frozen.update(variables_to_skip(model))  # the training data: not state
    if getattr(model, "previous_ensembler", None) is not None:
        frozen.update(id(v) for v in model.previous_ensembler.variables)
    own = [v for v in model.variables if id(v) not in frozen]
    return own + list(model.optimizer.variables) + list(model.metrics_variables)


def save(directory: str, model: keras.Model, *, step: int, keep: int, train_seconds: float = 0.0) -> str:
    """Writes `ckpt-<step>.npz` and removes all but the newest `keep` checkpoints. Returns the path.

    `train_seconds` is the time spent training the iteration up to `step`, over every session (`train_seconds`).
    """
    variables = _state_variables(model)
    # the Keras variable, not its `.value`: inside a tf.distribute scope a MirroredVariable cannot become numpy
    arrays = {f"v{index}": np.asarray(keras.ops.convert_to_numpy(v)) for index, v in enumerate(variables)}
    arrays["paths"] = np.array([v.path for v in variables])
    arrays[_TRAIN_SECONDS] = np.array(float(train_seconds))
    path = os.path.join(directory, f"ckpt-{step}.npz")
    with fileio.atomic_path(path, suffix=".npz") as temporary:
        np.savez(temporary, **arrays)
    for stale in steps(directory)[:-keep]:
        os.remove(os.path.join(directory, f"ckpt-{stale}.npz"))
    return path


def train_seconds(directory: str, step: int) -> float:
    """The training time recorded with checkpoint `step` (0 for step 0, or a checkpoint written before it was kept)."""
    path = os.path.join(directory, f"ckpt-{step}.npz")
    if not step or not os.path.exists(path):
        return 0.0
    with np.load(path) as data:
        return float(data[_TRAIN_SECONDS]) if _TRAIN_SECONDS in data.files else 0.0


def steps(directory: str) -> list[int]:
    """Steps of the checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = (_NAME.match(name) for name in os.listdir(directory))
    return sorted(int(match.group(1)) for match in found if match)


def restore_latest(directory: str, model: keras.Model) -> int:
    """Loads the newest intact checkpoint into `model` (optimizer built first). Returns its step, 0 if there is none.

    A checkpoint that cannot be read (truncated or garbled, e.g. by a full disk or a copy cut short) is deleted with
    one line saying so, and the next older one is tried; with none left the iteration starts from step 0.
    """
    found = steps(directory)
    if not found:
        return 0
    model.optimizer.build(model.trainable_variables)
    variables = _state_variables(model)
    for step in reversed(found):
        path = os.path.join(directory, f"ckpt-{step}.npz")
        try:
            values = _read(path, [v.path for v in variables])
        except _Damaged as damage:
            older = [s for s in found if s < step]
            then = f"resuming from ckpt-{older[-1]}.npz" if older else "no intact checkpoint left: training " \
                "the iteration from step 0"
            print(f"checkpoint {path} is damaged ({damage}); deleted it, {then}", flush=True)
            os.remove(path)
            continue
        for variable, value in zip(variables, values):
            variable.assign(value)
        return step
    return 0


class _Damaged(Exception):
    pass


def _read(path: str, expected_paths: list[str]) -> list[np.ndarray]:
    """The arrays of checkpoint `path`, read whole before anything is assigned (so a bad file changes nothing)."""
    try:
        with np.load(path) as data:
            paths = list(data["paths"])
            if paths == expected_paths:
                return [data[f"v{index}"] for index in range(len(paths))]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise _Damaged(f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:120]}") from None
    raise ValueError(f"checkpoint {path} does not match this iteration's model (its variables differ); was the run "
                     "directory written by another configuration?")
