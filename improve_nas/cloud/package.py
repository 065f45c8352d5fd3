"""The improve_nas source distribution a Vertex AI job installs, named by the digest of its sources.

Vertex AI's prebuilt training containers `pip install` the archives in `packageUris`, then run `python -m
<pythonModule>`. The archive is an sdist written here with tarfile, from a source tree staged in a temporary
directory: from a checkout, its pyproject.toml, README.md, LICENSE and package files; from an installed (non-editable)
improve_nas, the installed package files and a pyproject.toml written from the installed metadata (name, version,
requirements with their extras, entry points). Nothing is built locally, so it works offline and needs neither
`python -m build` nor network access; pip on the job's machine builds the wheel with setuptools.

The digest (`improve_nas.source_digest`) covers the package's own files, not the archive or the metadata, so the
same sources map to the same object name whichever way they are installed: a re-submit skips the upload, and
`--dry_run` can print the exact URI without building anything.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import importlib.metadata
import io
import json
import os
import pathlib
import re
import shutil
import tarfile
import tempfile

from improve_nas.errors import UsageError
from improve_nas.source_digest import PACKAGE, digest, package_files

# Top-level files of a checkout that the staged tree takes along (pyproject.toml reads README.md and LICENSE).
CHECKOUT_FILES = ("pyproject.toml", "README.md", "LICENSE")
_VERSION = re.compile(r'__version__ = "([^"]+)"')
_EXTRA_MARKER = re.compile(r"""\s*(\band\s+)?extra\s*==\s*["']([^"']+)["']\s*(\band\b)?""")


@dataclasses.dataclass(frozen=True)
class SourceTree:
    """The improve_nas sources an sdist is made of.

    Attributes:
      root: the directory holding the `improve_nas/` package: a checkout, or site-packages (or a pip --target).
      files: the package files that ship, relative to `root`, sorted (see `improve_nas.source_digest`).
      version: `improve_nas.__version__` as written in those sources.
      digest: 12 hex digits of the SHA-256 over the files' paths and contents.
      dist_info: the installed distribution's `.dist-info` directory; None for a checkout.
    """

    root: str
    files: tuple[str, ...]
    version: str
    digest: str
    dist_info: str | None = None

    @property
    def archive_name(self) -> str:
        """`improve_nas-<version>-<digest>.tar.gz`, the object name in the staging bucket."""
        return f"{PACKAGE}-{self.version}-{self.digest}.tar.gz"


def find_source_tree(root: str | None = None) -> SourceTree:
    """The sources of the improve_nas this process imported, or those under `root`.

    `root` (by default the directory above the imported package) is a checkout when it holds pyproject.toml, an
    installation when it holds improve_nas's `.dist-info`.

    Raises:
      UsageError: `root` is neither (e.g. a copy of the package without its metadata).
    """
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dist_info = None
    if not os.path.isfile(os.path.join(root, "pyproject.toml")):
        dist_info = _find_dist_info(root)
        if dist_info is None:
            raise UsageError(f"improve-nas submit packages improve_nas from a source checkout (pyproject.toml) or an "
                             f"installed distribution (a {PACKAGE}-*.dist-info), and {root} has neither: install "
                             "improve_nas with `pip install .` or run from the repository")
    init = os.path.join(root, PACKAGE, "__init__.py")
    match = _VERSION.search(_read(init)) if os.path.isfile(init) else None
    if not match:
        raise UsageError(f"{init} does not define __version__")
    files = package_files(root)
    return SourceTree(root=root, files=files, version=match.group(1), digest=digest(root, files), dist_info=dist_info)


def stage_source(tree: SourceTree, directory: str) -> None:
    """Writes a pip-installable source tree of `tree` into `directory` (pyproject.toml, README.md, LICENSE, package)."""
    for name in tree.files:
        _copy(os.path.join(tree.root, name), os.path.join(directory, name))
    if tree.dist_info is None:
        for name in CHECKOUT_FILES:
            if os.path.isfile(os.path.join(tree.root, name)):
                _copy(os.path.join(tree.root, name), os.path.join(directory, name))
        return
    distribution = importlib.metadata.PathDistribution(pathlib.Path(tree.dist_info))
    data_files = [name[len(PACKAGE) + 1:] for name in tree.files if not name.endswith(".py")]
    _write(os.path.join(directory, "pyproject.toml"), pyproject_from_metadata(distribution, data_files))
    _write(os.path.join(directory, "README.md"), distribution.metadata.get_payload() or "")  # the long description
    licences = sorted(glob.glob(os.path.join(tree.dist_info, "LICENSE*"))
                      + glob.glob(os.path.join(tree.dist_info, "licenses", "LICENSE*")))
    if licences:
        _copy(licences[0], os.path.join(directory, "LICENSE"))


def build_sdist(tree: SourceTree, out_dir: str) -> str:
    """Writes the sdist of `tree` into `out_dir`, named `tree.archive_name`; returns its path.

    The archive is reproducible: members sorted, owned by root, dated 0, so its bytes depend on the sources only.
    """
    prefix = f"{PACKAGE}-{tree.version}"
    path = os.path.join(out_dir, tree.archive_name)
    with tempfile.TemporaryDirectory(prefix="improve_nas-sdist-") as staging:
        stage_source(tree, staging)
        _write(os.path.join(staging, "PKG-INFO"), f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {tree.version}\n")
        members = sorted(os.path.relpath(os.path.join(directory, name), staging).replace(os.sep, "/")
                         for directory, _, names in os.walk(staging) for name in names)
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as compressed, \
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name in members:
                with open(os.path.join(staging, name), "rb") as handle:
                    content = handle.read()
                info = tarfile.TarInfo(f"{prefix}/{name}")
                info.size, info.mode = len(content), 0o644
                archive.addfile(info, io.BytesIO(content))
    return path


def pyproject_from_metadata(distribution: importlib.metadata.Distribution, data_files: list[str]) -> str:
    """A pyproject.toml that rebuilds `distribution` from its installed files: metadata, requirements, scripts.

    Args:
      distribution: the installed improve_nas.
      data_files: its non-.py package files, relative to the package directory (they ship as package data).
    """
    metadata = distribution.metadata
    dependencies, extras = [], {}
    for requirement in distribution.requires or []:
        requirement, extra = _split_extra(requirement)
        (extras.setdefault(extra, []) if extra else dependencies).append(requirement)
    lines = ["[build-system]", 'requires = ["setuptools>=64"]', 'build-backend = "setuptools.build_meta"', "",
             "[project]", f"name = {_toml(metadata['Name'])}", f"version = {_toml(metadata['Version'])}"]
    if metadata["Summary"]:
        lines.append(f"description = {_toml(metadata['Summary'])}")
    lines += ['readme = "README.md"']
    if metadata["Requires-Python"]:
        lines.append(f"requires-python = {_toml(metadata['Requires-Python'])}")
    licence = metadata["License-Expression"] or metadata["License"]
    if licence:
        lines.append(f"license = {{text = {_toml(licence)}}}")
    if metadata["Author"]:
        lines.append(f"authors = [{{name = {_toml(metadata['Author'])}}}]")
    if metadata["Keywords"]:
        lines.append(f"keywords = {_toml(metadata['Keywords'].split(','))}")
    lines += [f"classifiers = {_toml(metadata.get_all('Classifier') or [])}", f"dependencies = {_toml(dependencies)}"]
    urls = [url.split(",", 1) for url in metadata.get_all("Project-URL") or [] if "," in url]
    if urls:
        lines += ["", "[project.urls]"] + [f"{_toml(label.strip())} = {_toml(url.strip())}" for label, url in urls]
    if extras:
        lines += ["", "[project.optional-dependencies]"] + [f"{name} = {_toml(extras[name])}" for name in extras]
    groups: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for entry_point in distribution.entry_points:
        groups.setdefault(entry_point.group, []).append(entry_point)
    for group, entry_points in sorted(groups.items()):
        table = "project.scripts" if group == "console_scripts" else f"project.entry-points.{_toml(group)}"
        lines += ["", f"[{table}]"] + [f"{_toml(point.name)} = {_toml(point.value)}" for point in entry_points]
    lines += ["", "[tool.setuptools.packages.find]", f"include = {_toml([PACKAGE, PACKAGE + '.*'])}", "",
              "[tool.setuptools.package-data]", f"{PACKAGE} = {_toml(sorted(data_files))}", ""]
    return "\n".join(lines)


def _split_extra(requirement: str) -> tuple[str, str | None]:
    """`'pytest>=7; extra == "test"'` -> `('pytest>=7', 'test')`; other marker clauses stay on the requirement."""
    spec, _, marker = requirement.partition(";")
    match = _EXTRA_MARKER.search(marker)
    if not match:
        return requirement.strip(), None
    rest = (marker[:match.start()] + " " + marker[match.end():]).strip()
    return (f"{spec.strip()}; {rest}" if rest else spec.strip()), match.group(2)


def _find_dist_info(root: str) -> str | None:
    found = glob.glob(os.path.join(root, f"{PACKAGE}-*.dist-info"))  # pip names it after the normalized name
    return found[0] if len(found) == 1 else None


def _toml(value) -> str:
    return json.dumps(value)  # JSON strings and arrays of strings are valid TOML


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _copy(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
