"""A quiet TensorFlow start-up for the command line (`improve-nas`, `python -m improve_nas.trainer.trainer`).

TensorFlow's C++ runtime prints lines nobody asked for: at import, before its logging is set up, "All log messages
before absl::InitializeLog() ...", the oneDNN notice and "Could not find cuda drivers" (INFO lines that
TF_CPP_MIN_LOG_LEVEL does not reach, TF 2.18+); later cpu_feature_guard (INFO) and, on a machine without a GPU,
"failed call to cuInit" (ERROR). Unless the user set TF_CPP_MIN_LOG_LEVEL, the command line sets it to 3 and drops
the import-time lines below that level; a user who sets it (e.g. to 0) sees everything. TF_ENABLE_ONEDNN_OPTS is
left alone: it changes numerics. Library use (`import improve_nas`) is never affected.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
CLI_LEVEL = "3"  # hides INFO, WARNING and ERROR lines; FATAL ones still show
# An absl C++ log line: severity, MMDD hh:mm:ss.micros (before absl is set up: 0000 00:00:<epoch>), thread, file:line].
_LOG_LINE = re.compile(r"([IWE])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2}
_PRE_INIT_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def quiet_tensorflow_start_up() -> None:
    """Called first thing by the command-line entry points, before anything imports TensorFlow."""
    if LEVEL_VARIABLE in os.environ:
        return
    os.environ[LEVEL_VARIABLE] = CLI_LEVEL
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(int(CLI_LEVEL)))


def keep_line(line: str, level: int) -> bool:
    """False for the C++ start-up lines that TF_CPP_MIN_LOG_LEVEL=`level` would hide had logging been set up."""
    if line.rstrip("\r\n") == _PRE_INIT_NOTICE:
        return False
    match = _LOG_LINE.match(line)
    return match is None or _SEVERITY[match.group(1)] >= level


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` (wherever it happens: Keras, TFDS, ...) with its start-up lines dropped."""

    def __init__(self, level: int):
        self._level = level

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the C++ runtime starts with the first import
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader, self._level)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, level: int):
        self._loader, self._level = loader, level

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self._loader  # the module keeps its own loader
        with _stderr_filtered(self._level):
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


@contextlib.contextmanager
def _stderr_filtered(level: int):
    """Sends file descriptor 2 (where C++ writes) to a file meanwhile, then passes on the lines to keep."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if keep_line(line, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
