"""Training on several devices, or several machines: `--distribution` (`EngineSettings.distribution`).

    none      one device, whichever Keras picks (the first GPU, else the CPU).
    mirrored  synchronous data parallelism over every local device (all GPUs, else all CPU devices): variables are
              replicated, each global batch of `--batch_size` examples is split evenly across the devices (so the
              batch size must be a multiple of their number) and every step applies the gradient of the whole batch.
              TensorFlow backend: `tf.distribute.MirroredStrategy` (`tf_distribution.py`, adjustments listed there);
              JAX backend: `keras.distribution.DataParallel`, which compiles the single-device computation for a
              sharded batch, so losses, per-candidate clipping and batch-norm statistics are those of the global
              batch, exactly as on one device.
    multi_worker  the same over every device of every process that `TF_CONFIG` names (Vertex AI sets it in each
              replica of a multi-replica job; `cluster.py`), TensorFlow backend only:
              `tf.distribute.MultiWorkerMirroredStrategy` (`tf_multi_worker.py`). `--batch_size` is the global batch,
              split over all replicas of all workers.

A cluster is never used by accident, nor ignored by accident: with a TF_CONFIG that names more than one worker, any
distribution other than `multi_worker` is a usage error (each process would otherwise train the whole run alone and
write the same run directory), and `multi_worker` without TF_CONFIG is one too.

Who writes. In a cluster every process runs the same loop (every step, selection and evaluation are collective
operations all of them must join), but only the chief (`Distribution.is_chief`) writes the run directory; the others
work in a scratch copy of it (`run.py`). Each process keeps the ensemble it computed itself, so no process ever reads
what the chief wrote during the run; a rerun copies the chief's directory to resume from the same checkpoint.

The loop uses a `Distribution` in three places: it builds, compiles, trains, evaluates and saves an iteration inside
`scope()` (entered after `keras.backend.clear_session()`, which would forget a JAX distribution); it trains inside
`training(model)`; and it predicts through `for_inference(model)`. Checkpoints and saved members hold plain values,
so a run may resume under another distribution or device count. The run (`run.py`) uses three more hooks:
`is_chief` (where to write), `chief_value` (one root seed for all processes) and `wait_for_chief` (before exiting).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from improve_nas.adanet.choices import DISTRIBUTIONS
from improve_nas.adanet.runtime.cluster import Cluster, cluster_from_env
from improve_nas.errors import UsageError

if TYPE_CHECKING:
    import keras


class Distribution:
    """One device: every hook is a no-op. Subclasses spread the work over `num_replicas` devices."""

    name = "none"
    num_replicas = 1
    num_workers = 1  # processes training together
    is_chief = True  # whether this process writes the run directory (the others write a scratch copy)

    def scope(self):
        """Context for creating variables (models, optimizer) and for training and evaluating them."""
        return contextlib.nullcontext()

    def training(self, model: keras.Model):
        """Context around `fit`, for backend adjustments that must hold only while the model trains."""
        del model
        return contextlib.nullcontext()

    def for_inference(self, model: keras.Model):
        """`model`, or a stand-in whose `predict_on_batch` returns one output row per input row."""
        return model

    def chief_value(self, value: int) -> int:
        """The chief's `value`, in every process (e.g. a seed drawn at random). Every process must call it."""
        return value

    def wait_for_chief(self) -> None:
        """Returns once every process (the chief last, after its writes) has called it."""


class JaxDataParallel(Distribution):
    """`keras.distribution.DataParallel` over all devices of JAX's default platform."""

    name = "mirrored"

    def __init__(self):
        import keras

        devices = keras.distribution.list_devices()
        self.num_replicas = len(devices)
        self._distribution = keras.distribution.DataParallel(devices=devices)

    def scope(self):
        return self._distribution.scope()


def make_distribution(name: str, *, batch_size: int) -> Distribution:
    """The distribution called `name` (one of `DISTRIBUTIONS`) on the current Keras backend.

    `multi_worker` must be made before TensorFlow starts its runtime (it configures collective operations), and is
    made once per process: later calls return the same one.

    Raises:
        UsageError: unknown name, a backend without data parallelism here, or a batch size the devices cannot split
            evenly (uneven shares would weigh examples unequally in the summed gradients); a TF_CONFIG cluster with
            another distribution than `multi_worker`, or `multi_worker` without one or off TensorFlow.
    """
    import keras

    cluster = check_cluster(name)
    backend = keras.backend.backend()
    if name == "multi_worker":
        if backend != "tensorflow":
            raise UsageError(f"distribution 'multi_worker' needs the tensorflow Keras backend "
                             f"(tf.distribute.MultiWorkerMirroredStrategy), not {backend!r}; set "
                             "KERAS_BACKEND=tensorflow")
        from improve_nas.adanet.runtime.tf_multi_worker import multi_worker_distribution  # imports TensorFlow

        return _checked(multi_worker_distribution(cluster), batch_size)
    if name == "none":
        return Distribution()
    if backend == "tensorflow":
        from improve_nas.adanet.runtime.tf_distribution import (
            MirroredDistribution,  # imports TensorFlow's distribute API
        )

        distribution = MirroredDistribution()
    elif backend == "jax":
        distribution = JaxDataParallel()
    else:
        raise UsageError(f"distribution {name!r} needs the tensorflow or jax Keras backend, not {backend!r}; "
                         "use distribution 'none'")
    return _checked(distribution, batch_size)


def check_cluster(name: str) -> Cluster | None:
    """The TF_CONFIG cluster (None without one), if distribution `name` can run in it. Imports neither Keras nor TF.

    Raises:
        UsageError: an unknown name, a malformed TF_CONFIG, a cluster of several workers and another distribution than
            `multi_worker`, or `multi_worker` without TF_CONFIG.
    """
    if name not in DISTRIBUTIONS:
        raise UsageError(f"distribution {name!r} is invalid; choose one of: {', '.join(DISTRIBUTIONS)}")
    cluster = cluster_from_env()
    if name == "multi_worker" and cluster is None:
        raise UsageError("distribution 'multi_worker' needs the TF_CONFIG environment variable naming the cluster "
                         "(Vertex AI sets it in multi-replica jobs)")
    if name != "multi_worker" and cluster is not None and cluster.num_workers > 1:
        raise UsageError(f"TF_CONFIG names a cluster of {cluster.num_workers} workers (this process is "
                         f"{cluster.task}) but distribution is {name!r}; pass --distribution=multi_worker to train on "
                         "all of them, or unset TF_CONFIG to train in this process alone")
    return cluster


def _checked(distribution: Distribution, batch_size: int) -> Distribution:
    if batch_size % distribution.num_replicas:
        raise UsageError(f"batch_size={batch_size} must be a multiple of the {distribution.num_replicas} devices "
                         f"of distribution {distribution.name!r}")
    return distribution
