"""Training one iteration on several local devices: `--distribution` (`EngineSettings.distribution`).

    none      one device, whichever Keras picks (the first GPU, else the CPU).
    mirrored  synchronous data parallelism over every local device (all GPUs, else all CPU devices): variables are
              replicated, each global batch of `--batch_size` examples is split evenly across the devices (so the
              batch size must be a multiple of their number) and every step applies the gradient of the whole batch.
              TensorFlow backend: `tf.distribute.MirroredStrategy` (`tf_distribution.py`, adjustments listed there);
              JAX backend: `keras.distribution.DataParallel`, which compiles the single-device computation for a
              sharded batch, so losses, per-candidate clipping and batch-norm statistics are those of the global
              batch, exactly as on one device.

The loop uses a `Distribution` in three places: it builds, compiles, trains, evaluates and saves an iteration inside
`scope()` (entered after `keras.backend.clear_session()`, which would forget a JAX distribution); it trains inside
`training(model)`; and it predicts through `for_inference(model)`. Checkpoints and saved members hold plain values,
so a run may resume under another distribution or device count.
"""

from __future__ import annotations

import contextlib

import keras

from improve_nas.errors import UsageError

DISTRIBUTIONS = ("none", "mirrored")


class Distribution:
    """One device: every hook is a no-op. Subclasses spread the work over `num_replicas` devices."""

    name = "none"
    num_replicas = 1

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


class JaxDataParallel(Distribution):
    """`keras.distribution.DataParallel` over all devices of JAX's default platform."""

    name = "mirrored"

    def __init__(self):
        devices = keras.distribution.list_devices()
        self.num_replicas = len(devices)
        self._distribution = keras.distribution.DataParallel(devices=devices)

    def scope(self):
        return self._distribution.scope()


def make_distribution(name: str, *, batch_size: int) -> Distribution:
    """The distribution called `name` (one of `DISTRIBUTIONS`) on the current Keras backend.

    Raises:
        UsageError: unknown name, a backend without data parallelism here, or a batch size the devices cannot split
            evenly (uneven shares would weigh examples unequally in the summed gradients).
    """
    if name not in DISTRIBUTIONS:
        raise UsageError(f"distribution {name!r} is invalid; choose one of: {', '.join(DISTRIBUTIONS)}")
    if name == "none":
        return Distribution()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        from improve_nas.adanet.tf_distribution import MirroredDistribution  # imports TensorFlow's distribute API

        distribution = MirroredDistribution()
    elif backend == "jax":
        distribution = JaxDataParallel()
    else:
        raise UsageError(f"distribution {name!r} needs the tensorflow or jax Keras backend, not {backend!r}; "
                         "use distribution 'none'")
    if batch_size % distribution.num_replicas:
        raise UsageError(f"batch_size={batch_size} must be a multiple of the {distribution.num_replicas} devices "
                         f"of distribution {name!r}")
    return distribution
