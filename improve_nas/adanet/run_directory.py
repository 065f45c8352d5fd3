"""The layout of a run directory, and reading and writing finished iterations.

    config.json, env.json            written by the caller
    iterations/<t>/architecture.json the chosen ensemble (members, mixture weights), generator state, selection
    iterations/<t>/summary.json      the iteration's report entry
    iterations/<t>/members/<m>.keras the member(s) trained in iteration t (architecture and weights)
    checkpoints/<t>/ckpt-<step>.npz  mid-iteration state of the iteration in progress
    tensorboard/                     event files

A finished iteration is written into a staging directory and renamed into `iterations/<t>/`, so it exists whole or
not at all; its checkpoints are deleted only after that.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import keras

from improve_nas import fileio
from improve_nas.adanet.iteration_model import FrozenEnsemble
from improve_nas.adanet.subnetwork import EnsembleRecord, MemberRecord

ARCHITECTURE = "architecture.json"
SUMMARY = "summary.json"


class RunDirectory:
    """Paths and finished-iteration I/O of one run directory."""

    def __init__(self, path: str):
        self.path = fileio.check_local(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def tensorboard_dir(self) -> str:
        return self.file("tensorboard")

    def iteration_dir(self, iteration: int) -> str:
        return os.path.join(self.path, "iterations", str(iteration))

    def checkpoint_dir(self, iteration: int) -> str:
        return os.path.join(self.path, "checkpoints", str(iteration))

    def member_path(self, member: MemberRecord) -> str:
        return os.path.join(self.iteration_dir(member.iteration), "members", f"{member.name}.keras")

    def finished_iterations(self) -> list[int]:
        """Iterations whose directory was published, in order."""
        root = os.path.join(self.path, "iterations")
        if not os.path.isdir(root):
            return []
        return sorted(int(name) for name in os.listdir(root)
                      if name.isdigit() and os.path.exists(os.path.join(root, name, ARCHITECTURE)))

    def publish_iteration(self, iteration: int, *, architecture: dict[str, Any], summary: dict[str, Any],
                          new_members: dict[str, keras.Model]) -> None:
        """Writes iteration `iteration` whole: its architecture, summary and newly trained members."""
        final = self.iteration_dir(iteration)
        staging = os.path.join(self.path, "iterations", f".staging-{iteration}")
        if os.path.exists(staging):
            shutil.rmtree(staging)
        os.makedirs(os.path.join(staging, "members"))
        for name, model in new_members.items():
            model.save(os.path.join(staging, "members", f"{name}.keras"))
        fileio.write_json(os.path.join(staging, ARCHITECTURE), architecture)
        fileio.write_json(os.path.join(staging, SUMMARY), summary)
        fileio.publish_directory(staging, final)
        shutil.rmtree(self.checkpoint_dir(iteration), ignore_errors=True)

    def architecture(self, iteration: int) -> dict[str, Any]:
        return fileio.read_json(os.path.join(self.iteration_dir(iteration), ARCHITECTURE))

    def summaries(self) -> list[dict[str, Any]]:
        return [fileio.read_json(os.path.join(self.iteration_dir(t), SUMMARY)) for t in self.finished_iterations()]

    def load_ensemble(self, iteration: int) -> FrozenEnsemble:
        """The ensemble chosen at the end of `iteration`, members loaded (frozen) from their iterations."""
        record = EnsembleRecord.from_dict(self.architecture(iteration)["ensemble"])
        members = [freeze(keras.saving.load_model(self.member_path(member), compile=False))
                   for member in record.members]
        return FrozenEnsemble.from_record(record, members)


def freeze(model: keras.Model) -> keras.Model:
    """Makes every layer and variable of `model` non-trainable.

    Setting `model.trainable = False` alone is not enough for a model loaded from a `.keras` file whose config already
    said `trainable=False`: its sublayers' variables stay trainable and would reach the optimizer.
    """
    for layer in model._flatten_layers(include_self=True, recursive=True):
        layer.trainable = False
    for variable in model.variables:
        variable.trainable = False
    return model
