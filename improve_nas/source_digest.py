"""Which files make up the improve_nas package, and the digest that names them.

The digest is taken over the package's own files as they ship (`improve_nas/**`: the modules and the package data
pyproject.toml lists), so a source checkout and an installed copy of the same sources give the same digest. `submit`
names the package it uploads with it and env.json records it, so a run can be traced to the sources it ran.
Standard library only: the trainer imports it at start-up.
"""

from __future__ import annotations

import functools
import hashlib
import os

PACKAGE = "improve_nas"
# What ships besides the .py modules: pyproject.toml's [tool.setuptools.package-data] (tests/test_packaging.py
# checks that a built wheel holds exactly these files).
_DATA_SUFFIXES = (".npz",)
_DATA_NAMES = ("py.typed", "Dockerfile")  # the Dockerfile: the image is named by this digest


def package_files(root: str) -> tuple[str, ...]:
    """The files of `root`/improve_nas that ship, as sorted '/'-separated paths relative to `root`."""
    files = []
    for directory, subdirectories, names in os.walk(os.path.join(root, PACKAGE)):
        subdirectories[:] = [name for name in subdirectories if not name.startswith(".") and name != "__pycache__"]
        files.extend(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
                     for name in names if _ships(name))
    return tuple(sorted(files))


def digest(root: str, files: tuple[str, ...]) -> str:
    """12 hex digits of the SHA-256 over `files`' paths (relative to `root`) and contents."""
    hasher = hashlib.sha256()
    for name in files:
        with open(os.path.join(root, name), "rb") as handle:
            content = handle.read()
        hasher.update(f"{name}\0{len(content)}\0".encode())  # lengths keep the concatenation unambiguous
        hasher.update(content)
    return hasher.hexdigest()[:12]


@functools.cache
def source_digest() -> str:
    """The digest of the improve_nas this process imported (a checkout or an installed copy)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return digest(root, package_files(root))


def _ships(name: str) -> bool:
    return name.endswith(".py") or name.endswith(_DATA_SUFFIXES) or name in _DATA_NAMES
