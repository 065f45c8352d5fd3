"""The improve_nas source distribution a Vertex AI job installs, named by a hash of its sources.

Vertex AI's prebuilt training containers `pip install` the archives in `packageUris`, then run `python -m
<pythonModule>`. The archive is an sdist built with `python setup.py sdist` from a copy of the checkout: that needs
only setuptools, which every Python environment that installed this package has, so it works offline (`python -m
build` is not installed here, and `pip wheel` would try to fetch setuptools into an isolated build environment).

The hash covers the files the sdist is made of, not the archive (whose bytes change with every build's timestamps),
so the same sources map to the same object name: a re-submit skips the upload, and `--dry_run` can print the exact
URI without building anything.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from improve_nas.errors import UsageError

PACKAGE = "improve_nas"
# Top-level files the sdist needs: setup.py reads README.md and requirements.txt; MANIFEST.in lists the rest.
_TOP_LEVEL = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "requirements.txt",
              "config.yaml", "config_test.yaml", "LICENSE")
_VERSION = re.compile(r'__version__ = "([^"]+)"')


@dataclasses.dataclass(frozen=True)
class SourceTree:
    """The files of a source checkout that make up the sdist.

    Attributes:
      root: the checkout (the directory holding setup.py).
      files: paths relative to `root`, sorted: the top-level files present and every `.py` file of the package.
      version: `improve_nas.__version__` as written in that checkout.
      digest: 12 hex digits of the SHA-256 over the files' paths and contents.
    """

    root: str
    files: tuple[str, ...]
    version: str
    digest: str

    @property
    def archive_name(self) -> str:
        """`improve_nas-<version>-<digest>.tar.gz`, the object name in the staging bucket."""
        return f"{PACKAGE}-{self.version}-{self.digest}.tar.gz"


def find_source_tree(root: str | None = None) -> SourceTree:
    """The checkout this package was imported from (editable install), or `root`.

    Raises:
      UsageError: `root` holds no setup.py (e.g. improve_nas was installed from a wheel).
    """
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, "setup.py")):
        raise UsageError(f"improve-nas submit builds its package from a source checkout, and {root} has no "
                         "setup.py; install improve_nas with `pip install -e .` from the repository")
    files = [name for name in _TOP_LEVEL if os.path.isfile(os.path.join(root, name))]
    for directory, subdirectories, names in os.walk(os.path.join(root, PACKAGE)):
        subdirectories[:] = sorted(name for name in subdirectories
                                   if not name.startswith(".") and name != "__pycache__")
        files.extend(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
                     for name in names if name.endswith(".py"))
    files.sort()
    with open(os.path.join(root, PACKAGE, "__init__.py"), encoding="utf-8") as handle:
        match = _VERSION.search(handle.read())
    if not match:
        raise UsageError(f"{root}/{PACKAGE}/__init__.py does not define __version__")
    return SourceTree(root=root, files=tuple(files), version=match.group(1), digest=_digest(root, files))


def build_sdist(tree: SourceTree, out_dir: str) -> str:
    """Builds the sdist of `tree` into `out_dir`, named `tree.archive_name`; returns its path.

    The build runs in a temporary copy of the files, so the checkout gets no build/ or egg-info debris.

    Raises:
      UsageError: setup.py failed (its last error line is in the message).
    """
    with tempfile.TemporaryDirectory(prefix="improve_nas-sdist-") as staging:
        for name in tree.files:
            target = os.path.join(staging, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(tree.root, name), target)
        dist = os.path.join(staging, "dist")
        result = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--formats=gztar", f"--dist-dir={dist}"],
                                cwd=staging, capture_output=True, text=True)
        archives = glob.glob(os.path.join(dist, "*.tar.gz"))
        if result.returncode or len(archives) != 1:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no archive produced"]
            raise UsageError(f"building the improve_nas sdist failed: {lines[-1]}")
        path = os.path.join(out_dir, tree.archive_name)
        shutil.move(archives[0], path)
    return path


def _digest(root: str, files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(root, name), "rb") as handle:
            content = handle.read()
        digest.update(f"{name}\0{len(content)}\0".encode())  # lengths keep the concatenation unambiguous
        digest.update(content)
    return digest.hexdigest()[:12]
