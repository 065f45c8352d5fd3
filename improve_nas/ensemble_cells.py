"""`improve-nas arch MODEL_DIR`: the cells of every member of a run's ensemble, read from its architecture.json.

The ensemble chosen at the end of iteration T is `iterations/<T>/architecture.json`'s "ensemble"; each member's
genotype is `shared["genotype"]` (`space.Genotype.to_dict`). A member without one was trained before the search
existed, when every member was NASNet-A, and is shown as NASNet-A, marked so. The file is checked against its
iteration's manifest, as `improve-nas report` checks summaries, so a damaged file is one line, not a wrong drawing.

A local run directory is only read (a read-only one works); a gs:// one is read through `run_location` without a
working copy. Bad input (no run directory, no finished iteration, an iteration out of range, a format, an --out that
cannot be written, a damaged file) is one line (`UsageError`, exit 2) before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from improve_nas.errors import UsageError, io_error_line, nearest
from improve_nas.search import drawing, space
from improve_nas.storage import fileio, gcs, integrity

FORMATS = drawing.FORMATS
DEFAULT_FORMAT = "text"
# What --out's extension says when --format is not given.
EXTENSIONS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".txt": "text", ".json": "json"}


@dataclasses.dataclass(frozen=True)
class EnsembleCells:
    """The members of the ensemble chosen at the end of `iteration`, in mixing order."""

    model_dir: str
    iteration: int
    ensemble: str
    members: tuple[drawing.Member, ...]

    @property
    def title(self) -> str:
        return (f"{self.model_dir}: iteration {self.iteration}, ensemble {self.ensemble}, "
                f"{len(self.members)} member{'s' if len(self.members) != 1 else ''}")


def run(model_dir: str, *, iteration: int | None = None, output_format: str | None = None,
        out: str | None = None) -> EnsembleCells:
    """Writes the drawing of `model_dir`'s ensemble at `iteration` (default: the last finished) to `out`, or prints
    it (text, dot and json only). Returns what was drawn."""
    output_format = resolve_format(output_format, out)
    if out is None and output_format in drawing.PICTURE_FORMATS:
        raise UsageError(f"--format={output_format} writes a picture: give --out=PATH, e.g. --out=cells.{output_format}"
                         " (or --format=text, dot or json to print)")
    if out is not None:
        check_writable_file(out)
    cells = load(model_dir, iteration)
    content = render(cells, output_format)
    if out is None:
        sys.stdout.write(content)
    else:
        _write(out, content)
        print(f"wrote {out}: {cells.title}")
    return cells


def resolve_format(output_format: str | None, out: str | None) -> str:
    """The --format given, else the one --out's extension names, else text; one line for an unknown or
    contradicting one."""
    implied = EXTENSIONS.get(os.path.splitext(out)[1].lower()) if out else None
    if output_format is None:
        return implied or DEFAULT_FORMAT
    if output_format not in FORMATS:
        raise UsageError(f"--format={output_format!r} is invalid; {nearest(output_format, FORMATS)}"
                         f"choose one of: {', '.join(FORMATS)}")
    if implied is not None and implied != output_format:
        raise UsageError(f"--out={out!r} names a .{implied} file but --format={output_format}; change one of them")
    return output_format


def render(cells: EnsembleCells, output_format: str) -> str | bytes:
    """The drawing in `output_format`: bytes for svg/png, text otherwise."""
    if output_format == "text":
        return drawing.to_text(cells.members, cells.title)
    if output_format == "json":
        return drawing.to_json(cells.members, model_dir=cells.model_dir, iteration=cells.iteration,
                               ensemble=cells.ensemble)
    if output_format == "dot":
        return drawing.to_dot(cells.members, cells.title)
    return drawing.render(cells.members, output_format, cells.title)


def load(model_dir: str, iteration: int | None = None) -> EnsembleCells:
    """The ensemble of `model_dir` (local or gs://) chosen at `iteration`, by default the last finished one."""
    reader = _Reader(model_dir)
    finished = reader.finished_iterations()
    if not finished:
        if not reader.is_run_directory():
            raise UsageError(f"{model_dir!r} is not a run directory (no config.json, no {integrity.ITERATIONS}/); "
                             "give the --model_dir of a training run")
        raise UsageError(f"no iteration of {model_dir!r} has finished yet: nothing to draw")
    if iteration is None:
        iteration = finished[-1]
    elif iteration not in finished:
        raise UsageError(f"--iteration={iteration} is not a finished iteration of {model_dir!r}; valid: "
                         f"{_ranges(finished)}")
    name = f"{integrity.ITERATIONS}/{iteration}/{integrity.ARCHITECTURE}"
    path = f"{model_dir.rstrip('/')}/{name}"
    way_out = integrity.retrain_hint(model_dir.rstrip("/"), iteration, finished)
    text = reader.read_text(name)
    if text is None:  # removed since it was listed
        raise integrity.DamagedRunError(f"{path} is missing: {way_out}")
    integrity.check_text(text, reader.read_text(f"{integrity.ITERATIONS}/{iteration}/{integrity.MANIFEST}"),
                         path=path, way_out=way_out)
    architecture = integrity.parse_json(text, path=path, way_out=way_out)
    ensemble = architecture.get("ensemble") if isinstance(architecture, dict) else None
    if not isinstance(ensemble, dict) or not isinstance(ensemble.get("members"), list) or not ensemble["members"]:
        raise integrity.DamagedRunError(f"{path} is damaged (no ensemble with members): {way_out}")
    members = tuple(_member(value, index, path, way_out) for index, value in enumerate(ensemble["members"]))
    return EnsembleCells(model_dir, iteration, str(ensemble.get("name", "?")), members)


def _member(value: Any, index: int, path: str, way_out: str) -> drawing.Member:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(
            value.get("shared", {}), dict):
        raise integrity.DamagedRunError(f"{path} is damaged (member {index} is not a member record): {way_out}")
    recorded = value.get("shared", {}).get("genotype")
    if recorded is None:
        return drawing.Member(value["name"], space.NASNET_A, recorded=False)
    try:
        genotype = space.Genotype.from_dict(recorded)
    except UsageError as error:
        raise integrity.DamagedRunError(f"{path} is damaged (the genotype of member {value['name']}: {error}): "
                                        f"{way_out}") from None
    return drawing.Member(value["name"], genotype)


def _ranges(values: list[int]) -> str:
    """0..4, or 0, 1, 3 when there are gaps."""
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}" if len(values) > 1 else str(values[0])
    return ", ".join(map(str, values))


class _Reader:
    """Reads a run directory without writing to it: a local path, or gs://BUCKET/PATH."""

    def __init__(self, model_dir: str):
        self._url = model_dir.rstrip("/") or model_dir
        self._location = None
        if gcs.is_gs_url(model_dir) or "://" in model_dir:
            from improve_nas.storage import run_location

            self._location = run_location.open_location(model_dir)  # checks the URL and that it can be listed
        elif not os.path.isdir(model_dir):
            what = "does not exist" if not os.path.exists(model_dir) else "is not a directory"
            raise UsageError(f"{model_dir!r} {what}: give the --model_dir of a training run")

    def read_text(self, name: str) -> str | None:
        try:
            if self._location is not None:
                return self._location.read_text(name)
            path = os.path.join(self._url, name)
            if not os.path.isfile(path):
                return None
            with open(path, encoding="utf-8") as stream:
                return stream.read()
        except UnicodeDecodeError:
            return "\ufffd"  # not text: compared with the manifest or parsed, it is reported as damaged
        except OSError as error:
            raise UsageError(f"cannot read {self._url}/{name}: {error.strerror or error}") from None

    def finished_iterations(self) -> list[int]:
        """Iterations whose directory holds its architecture.json (`integrity.published_iterations`)."""
        if self._location is None:
            return integrity.published_iterations(self._url)
        prefix = f"{self._url}/{integrity.ITERATIONS}/"
        names = {blob.url[len(prefix):] for blob in gcs.list_blobs(prefix)}
        return sorted(int(name.split("/")[0]) for name in names
                      if name.count("/") == 1 and name.endswith(f"/{integrity.ARCHITECTURE}")
                      and name.split("/")[0].isdigit())

    def is_run_directory(self) -> bool:
        if self._location is None:
            return any(os.path.exists(os.path.join(self._url, name)) for name in ("config.json", integrity.ITERATIONS))
        return self.read_text("config.json") is not None or bool(gcs.list_blobs(f"{self._url}/{integrity.ITERATIONS}/"))


def check_writable_file(path: str) -> None:
    """One line, before anything is read or drawn, when `path` cannot be written as a file."""
    if "://" in path:
        raise UsageError(f"--out={path!r}: write the drawing to a local file (copy it to a bucket afterwards)")
    if os.path.isdir(path):
        raise UsageError(f"--out={path!r} is a directory; give a file name, e.g. {os.path.join(path, 'cells.svg')}")
    existing = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--out={path!r} cannot be created: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):  # the file is written beside itself and renamed into place
        raise UsageError(f"--out={path!r} cannot be written: permission denied in {existing!r}")


def _write(path: str, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with fileio.atomic_path(path) as temporary:
            with open(temporary, "wb") as stream:
                stream.write(data)
    except OSError as error:
        raise UsageError(io_error_line(error) or f"cannot write --out={path!r}: {error}") from None
