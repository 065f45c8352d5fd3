"""What a published directory of a run consists of, and the check that it is still so.

A finished iteration (`iterations/<t>/`) and the export (`export/`) are written whole into a staging directory and
renamed into place; before the rename, `write_manifest` records every file of it in `manifest.json` (relative path
-> size and SHA-256). Resume, export and `improve-nas report` check it (`check_manifest`): a file that is missing, of
another size or checksum is reported in one line naming it and the way out (`DamagedRunError`, exit code 2).
Directories written before manifests existed have none: they are loaded unverified, and a file of theirs that cannot
be read still gives one line (`read_json`).

No Keras here: `improve-nas report` uses it without starting a backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from functools import partial
from typing import Any

from improve_nas.errors import UsageError
from improve_nas.storage import fileio

MANIFEST = "manifest.json"
ITERATIONS = "iterations"
ARCHITECTURE = "architecture.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


class DamagedRunError(UsageError):
    """A file of a run directory is missing, truncated or garbled; the message names it and what to delete."""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str) -> None:
    """Records size and checksum of every file under `directory` in `directory/manifest.json`."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            if relative != MANIFEST:
                files[relative] = {"size": os.path.getsize(path), "sha256": sha256(path)}
    fileio.write_json(os.path.join(directory, MANIFEST), {"version": 1, "files": dict(sorted(files.items()))})


def check_manifest(directory: str, *, way_out: str) -> bool:
    """Checks `directory` against its manifest: True if it matches, False if it has none (written before manifests).

    Raises:
      DamagedRunError: a listed file is missing or differs, or the manifest itself cannot be read.
    """
    manifest_path = os.path.join(directory, MANIFEST)
    if not os.path.exists(manifest_path):
        return False
    manifest = read_json(manifest_path, way_out=way_out)
    try:
        files = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in manifest["files"].items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise DamagedRunError(f"{manifest_path} is damaged (not a manifest): {way_out}") from None
    for name, (size, checksum) in files.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise DamagedRunError(f"{path} is missing: {way_out}")
        _compare(path, os.path.getsize(path), partial(sha256, path), size, checksum, way_out)
    return True


def check_text(text: str, manifest_text: str | None, *, path: str, way_out: str) -> None:
    """Checks file `path` of a published directory, read as `text` (e.g. from a bucket), against the text of that
    directory's manifest (None: written before manifests, nothing to check)."""
    if manifest_text is None:
        return
    manifest_path = os.path.join(os.path.dirname(path), MANIFEST)
    manifest = parse_json(manifest_text, path=manifest_path, way_out=way_out)
    try:
        entry = manifest["files"][os.path.basename(path)]
        size, checksum = int(entry["size"]), str(entry["sha256"])
    except (KeyError, TypeError, ValueError):
        raise DamagedRunError(f"{manifest_path} is damaged (no entry for {os.path.basename(path)}): {way_out}") \
            from None
    data = text.encode("utf-8")
    _compare(path, len(data), lambda: hashlib.sha256(data).hexdigest(), size, checksum, way_out)


def _compare(path: str, size: int, checksum: Callable[[], str], expected_size: int, expected_checksum: str,
             way_out: str) -> None:
    if size != expected_size:
        raise DamagedRunError(f"{path} is damaged (size {size}, expected {expected_size}): {way_out}")
    if checksum() != expected_checksum:
        raise DamagedRunError(f"{path} is damaged (its checksum differs from the one recorded): {way_out}")


def read_json(path: str, *, way_out: str) -> Any:
    """The JSON value in `path`; one line (DamagedRunError) if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise DamagedRunError(f"{path} cannot be read ({_reason(error)}): {way_out}") from None
    return parse_json(text, path=path, way_out=way_out)


def parse_json(text: str, *, path: str, way_out: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise DamagedRunError(f"{path} is damaged (not JSON: {_reason(error)}): {way_out}") from None


def _reason(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def iteration_dir(run_path: str, iteration: int) -> str:
    return os.path.join(run_path, ITERATIONS, str(iteration))


def published_iterations(run_path: str) -> list[int]:
    """Iterations whose directory was published (holds its architecture.json), in order; gaps included."""
    root = os.path.join(run_path, ITERATIONS)
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root)
                  if name.isdigit() and os.path.exists(os.path.join(root, name, ARCHITECTURE)))


def retrain_hint(run_path: str, iteration: int, finished: list[int]) -> str:
    """The way out for a damaged iteration: delete it and every later one (they build on it), then rerun."""
    later = [t for t in finished if t > iteration]
    target = iteration_dir(run_path, iteration)
    if not later:
        return f"delete {target} and rerun the training command to retrain iteration {iteration}"
    return (f"delete {target} and the later iterations {', '.join(map(str, later))} beside it, then rerun the "
            f"training command to retrain from iteration {iteration}")


def check_iterations(run_path: str, *, already_checked: Callable[[int], bool] = lambda t: False) -> list[int]:
    """The finished iterations of run directory `run_path`, each checked against its manifest (those without one,
    written before manifests existed, have their JSON files parsed). Skips iterations `already_checked`.

    Raises:
      DamagedRunError: an iteration is missing before a later one, or a file of one is damaged.
    """
    finished = published_iterations(run_path)
    for expected, iteration in enumerate(finished):
        if iteration != expected:
            raise DamagedRunError(
                f"{iteration_dir(run_path, expected)} is missing (or has no {ARCHITECTURE}) but later iterations "
                f"exist: {retrain_hint(run_path, expected, finished)}")
    for iteration in finished:
        if already_checked(iteration):
            continue
        directory = iteration_dir(run_path, iteration)
        way_out = retrain_hint(run_path, iteration, finished)
        if not check_manifest(directory, way_out=way_out):
            for name in (ARCHITECTURE, SUMMARY):
                if not isinstance(read_json(os.path.join(directory, name), way_out=way_out), dict):
                    raise DamagedRunError(f"{os.path.join(directory, name)} is damaged (not a JSON object): {way_out}")
    return finished


def remove_stale_checkpoints(run_path: str, finished: list[int]) -> list[int]:
    """Deletes `checkpoints/<t>/` of every iteration but the one in progress (the first unfinished): those of a
    published iteration are left when a run stops right after publishing, others by iterations deleted to retrain.
    Returns the iterations whose checkpoints were deleted."""
    root = os.path.join(run_path, CHECKPOINTS)
    in_progress = len(finished)
    stale = sorted(int(name) for name in os.listdir(root) if name.isdigit() and int(name) != in_progress) \
        if os.path.isdir(root) else []
    for iteration in stale:
        shutil.rmtree(os.path.join(root, str(iteration)), ignore_errors=True)
    return stale
