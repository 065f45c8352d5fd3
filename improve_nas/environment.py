"""env.json: what a run ran on, so a result can be traced to its software, its sources and its hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

import improve_nas
from improve_nas.source_digest import source_digest

_PACKAGES = ("improve_nas", "keras", "tensorflow", "tensorflow-datasets", "jax", "jaxlib", "numpy", "absl-py")
# Set by the project's Dockerfile in the image it builds (ENV IMPROVE_NAS_IMAGE=<the image URI>).
IMAGE_VARIABLE = "IMPROVE_NAS_IMAGE"
# Set by Vertex AI in every replica of a custom job.
VERTEX_VARIABLES = {"vertex_job_id": "CLOUD_ML_JOB_ID", "vertex_trial_id": "CLOUD_ML_TRIAL_ID"}
# The CUDA libraries JAX runs on are pip packages; their versions are the CUDA / cuDNN a JAX run used.
_JAX_CUDA_PACKAGES = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
                      "nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "nvidia-cuda-runtime", "nvidia-cudnn-cu13")


def describe_environment(*, seed: int) -> dict[str, Any]:
    import keras

    devices = [str(device) for device in keras.distribution.list_devices()]
    return {
        "backend": keras.backend.backend(),
        "devices": devices,
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "improve_nas": {"version": improve_nas.__version__, "source_digest": source_digest()},
        "container": describe_container(),
        "gpu": describe_gpu(keras.backend.backend()) if any("gpu" in device.lower() for device in devices) else None,
        "packages": {package: _version(package) for package in _PACKAGES},
        "argv": sys.argv,
    }


def describe_container() -> dict[str, str | None]:
    """The image this process runs in (None outside the project's image) and the Vertex AI job it belongs to."""
    return {"image": os.environ.get(IMAGE_VARIABLE) or None,
            **{key: os.environ.get(variable) or None for key, variable in VERTEX_VARIABLES.items()}}


def describe_gpu(backend: str) -> dict[str, Any]:
    """The CUDA and cuDNN versions the backend runs on: cheap look-ups, each None where it cannot be told."""
    if backend == "tensorflow":
        try:
            import tensorflow as tf

            build = tf.sysconfig.get_build_info()
            return {"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version")}
        except Exception:  # a record of the environment never fails the run
            return {"cuda": None, "cudnn": None}
    packages = {package: _version(package) for package in _JAX_CUDA_PACKAGES}
    return {"cuda": next((version for name, version in packages.items() if version and "runtime" in name), None),
            "cudnn": next((version for name, version in packages.items() if version and "cudnn" in name), None),
            "packages": {name: version for name, version in packages.items() if version}}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
