"""File access for run directories: atomic writes, so a reader never sees half a file.

Every write goes to a temporary name in the same directory and is renamed into place (`os.replace` is atomic on
POSIX). Object-store paths are refused here: a gs:// run directory is worked on in a local copy (`run_location`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from improve_nas.errors import UsageError


def _file_mode() -> int:
    """The mode `open(path, "w")` gives a new file under this process's umask (read once: setting it is global)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()
LEFTOVER_PREFIXES = (".tmp-", ".staging-")  # writes in progress that a crash or a full disk can leave behind


def remove_leftovers(root: str) -> list[str]:
    """Deletes temporary files and staging directories under `root` (only the writer of `root` may: hold its lock).

    Returns the paths removed.
    """
    removed = []
    for directory, subdirectories, names in os.walk(root):
        for name in list(subdirectories) + names:
            if name.startswith(LEFTOVER_PREFIXES):
                path = os.path.join(directory, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(path)
        subdirectories[:] = [name for name in subdirectories if not name.startswith(LEFTOVER_PREFIXES)]
    return removed


def check_local(path: str) -> str:
    """`path`, if it is a local path. (A gs:// model_dir is trained in a local working copy: `run_location`.)"""
    if "://" in path:
        raise UsageError(f"{path!r} is not a local path; a model_dir is a local path or gs://BUCKET/PATH")
    return path


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


class atomic_path:
    """Context manager yielding a temporary file name that replaces `path` on success and vanishes on failure."""

    def __init__(self, path: str, suffix: str = ""):
        self._path = path
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        handle, self._temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                                                   suffix=suffix or os.path.basename(path))
        os.close(handle)

    def __enter__(self) -> str:
        return self._temporary

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            os.chmod(self._temporary, _FILE_MODE)  # mkstemp makes it 0600; every file of a run gets the umask's mode
            os.replace(self._temporary, self._path)
        elif os.path.exists(self._temporary):
            os.remove(self._temporary)


def publish_directory(staging: str, final: str) -> None:
    """Renames a fully written staging directory into place, so `final` exists whole or not at all."""
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(staging, final)
