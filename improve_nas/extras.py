"""The optional dependencies of pyproject.toml's extras, checked where a command first needs them.

`pip install .` installs the core (training on TensorFlow); `improve-nas submit` and gs:// run directories need
the `cloud` extra. Without it, they stop with one line naming the missing package and the pip command that adds
it (a UsageError: exit 2), instead of a ModuleNotFoundError traceback from deep inside.
"""

from __future__ import annotations

import importlib.util

from improve_nas.errors import UsageError

# extra -> {module imported: distribution that provides it}, as pyproject.toml lists them.
EXTRAS = {
    "cloud": {"yaml": "PyYAML", "google.cloud.storage": "google-cloud-storage", "google.auth": "google-auth",
              "google.api_core": "google-api-core"},
}


def require(extra: str, *, purpose: str) -> None:
    """Checks, without importing them, that the modules of `extra` are installed.

    Args:
      extra: a key of `EXTRAS`.
      purpose: what needs them, for the message, e.g. "improve-nas submit".

    Raises:
      UsageError: one is missing; the message names it and `pip install "improve_nas[EXTRA]"`.
    """
    for module, distribution in EXTRAS[extra].items():
        if not _installed(module):
            raise UsageError(f"{purpose} needs {distribution}, which is not installed: "
                             f'pip install "improve_nas[{extra}]"')


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (google, google.cloud) is missing
        return False
