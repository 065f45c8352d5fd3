"""The layout of a run directory, and reading and writing finished iterations.

    config.json, env.json            written by the caller
    iterations/<t>/architecture.json the chosen ensemble (members, mixture weights), generator state, selection
    iterations/<t>/summary.json      the iteration's report entry, with the record of every candidate it trained
    iterations/<t>/members/<m>.keras the member(s) trained in iteration t (architecture and weights)
    iterations/<t>/pool/             every candidate of iteration t: the unchosen ones' models, all their logits
                                     on the selection and test rows (`pool.py`; unless the run turned it off)
    iterations/<t>/manifest.json     size and SHA-256 of each file above (`integrity`), checked before use
    checkpoints/<t>/ckpt-<step>.npz  mid-iteration state of the iteration in progress
    tensorboard/                     event files

A finished iteration is written into a staging directory and renamed into `iterations/<t>/`, so it exists whole or
not at all; its checkpoints are deleted only after that (and at the next start, if the process died in between).
A damaged published file is one line naming it and what to delete (`integrity.DamagedRunError`), never a traceback.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import keras

from improve_nas.adanet.iteration_model import FrozenEnsemble
from improve_nas.adanet.runtime import pool as candidate_pool
from improve_nas.adanet.subnetwork import CandidateRecord, EnsembleRecord, MemberRecord
from improve_nas.storage import fileio, integrity

ARCHITECTURE = integrity.ARCHITECTURE
SUMMARY = integrity.SUMMARY


class RunDirectory:
    """Paths and finished-iteration I/O of one run directory."""

    def __init__(self, path: str):
        self.path = fileio.check_local(path)
        self._checked: set[int] = set()  # iterations checked against their manifest (or written) by this process

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
        """Iterations whose directory was published, in order (not checked: see `verify`)."""
        return integrity.published_iterations(self.path)

    def verify(self) -> list[int]:
        """The finished iterations, each checked against its manifest; removes checkpoints of finished iterations.

        Raises:
          integrity.DamagedRunError: an iteration missing before a later one, or a damaged file of one.
        """
        finished = integrity.check_iterations(self.path, already_checked=self._checked.__contains__)
        self._checked.update(finished)
        for stale in integrity.remove_stale_checkpoints(self.path, finished):
            print(f"removed {self.checkpoint_dir(stale)}: not of the iteration in progress", flush=True)
        return finished

    def publish_iteration(self, iteration: int, *, architecture: dict[str, Any], summary: dict[str, Any],
                          new_members: dict[str, keras.Model], pool: candidate_pool.Pool | None = None,
                          unchosen: dict[str, keras.Model] | None = None) -> None:
        """Writes iteration `iteration` whole: its architecture, summary, newly trained members and, given a `pool`,
        its candidate pool (the logits, and the `unchosen` candidates' models)."""
        final = self.iteration_dir(iteration)
        staging = os.path.join(self.path, "iterations", f".staging-{iteration}")
        if os.path.exists(staging):
            shutil.rmtree(staging)
        os.makedirs(os.path.join(staging, "members"))
        for name, model in new_members.items():
            model.save(os.path.join(staging, "members", f"{name}.keras"))
        fileio.write_json(os.path.join(staging, ARCHITECTURE), architecture)
        if pool is not None:
            candidate_pool.write(staging, pool, unchosen or {})
        fileio.write_json(os.path.join(staging, SUMMARY), summary)
        integrity.write_manifest(staging)
        fileio.publish_directory(staging, final)
        self._checked.add(iteration)
        shutil.rmtree(self.checkpoint_dir(iteration), ignore_errors=True)

    def architecture(self, iteration: int) -> dict[str, Any]:
        return self._read_json(iteration, ARCHITECTURE)

    def summaries(self) -> list[dict[str, Any]]:
        return [self._read_json(t, SUMMARY) for t in self.finished_iterations()]

    def candidate_history(self, iteration: int) -> list[CandidateRecord]:
        """The record of every candidate subnetwork trained in iterations 0..iteration-1 (their summaries'
        `subnetworks`), in order; iterations written before the record existed contribute nothing."""
        return [CandidateRecord.from_dict(entry) for t in range(iteration)
                for entry in self._read_json(t, SUMMARY).get("subnetworks", [])]

    def load_ensemble(self, iteration: int) -> FrozenEnsemble:
        """The ensemble chosen at the end of `iteration`, members loaded (frozen) from their iterations."""
        try:
            record = EnsembleRecord.from_dict(self.architecture(iteration)["ensemble"])
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, integrity.DamagedRunError):
                raise
            raise integrity.DamagedRunError(
                f"{os.path.join(self.iteration_dir(iteration), ARCHITECTURE)} is damaged (no valid ensemble: "
                f"{error!r}): {self._way_out(iteration)}") from None
        return FrozenEnsemble.from_record(record, [self._load_member(member) for member in record.members])

    def _load_member(self, member: MemberRecord) -> keras.Model:
        self._check(member.iteration)
        path = self.member_path(member)
        if os.path.exists(os.path.join(self.iteration_dir(member.iteration), integrity.MANIFEST)):
            return freeze(keras.saving.load_model(path, compile=False))  # intact: an error here is no damage
        try:
            return freeze(keras.saving.load_model(path, compile=False))
        except Exception as error:  # noqa: BLE001  a file no manifest vouches for: whatever went wrong, one line
            reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
            raise integrity.DamagedRunError(f"{path} cannot be loaded ({type(error).__name__}: {reason}): "
                                            f"{self._way_out(member.iteration)}") from None

    def _check(self, iteration: int) -> None:
        """Checks `iteration` against its manifest once per process (the engine checks all of them at start)."""
        if iteration not in self._checked:
            integrity.check_manifest(self.iteration_dir(iteration), way_out=self._way_out(iteration))
            self._checked.add(iteration)

    def _read_json(self, iteration: int, name: str) -> dict[str, Any]:
        self._check(iteration)
        path = os.path.join(self.iteration_dir(iteration), name)
        value = integrity.read_json(path, way_out=self._way_out(iteration))
        if not isinstance(value, dict):
            raise integrity.DamagedRunError(f"{path} is damaged (not a JSON object): {self._way_out(iteration)}")
        return value

    def _way_out(self, iteration: int) -> str:
        return integrity.retrain_hint(self.path, iteration, self.finished_iterations())


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
