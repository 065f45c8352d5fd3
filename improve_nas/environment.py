"""env.json: what a run ran on, so a result can be traced to its software and hardware."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

_PACKAGES = ("improve_nas", "keras", "tensorflow", "tensorflow-datasets", "jax", "jaxlib", "numpy", "absl-py",
             "scikit-learn")


def describe_environment(*, seed: int) -> dict[str, Any]:
    import keras

    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "backend": keras.backend.backend(),
        "devices": [str(device) for device in keras.distribution.list_devices()],
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "argv": sys.argv,
    }
