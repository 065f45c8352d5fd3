"""`--distribution=multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy` over the processes `TF_CONFIG` names.

Every process runs the same loop on the same data: the engine's batches are a pure function of (seed, step), and the
root seed is the chief's (`chief_value`). Keras turns each process's batch stream into a distributed dataset whose
auto-sharding keeps, in each process, only its replicas' rows of every global batch, so a step trains on the
`--batch_size` examples one device would see. Gradients, batch-norm statistics and the loss scale are made those of
the global batch by the adjustments of `--distribution=mirrored` (`tf_distribution.py`), which hold here unchanged.
Three more keep the processes in lockstep:

- Stopping. A collective step must be run by every process, so `fit` must end after the same step everywhere. Early
  stops are local decisions (the checkpoint clock of `save_checkpoints_secs`, SIGTERM): while a model trains here,
  its `stop_training` is true in every process as soon as one process's callbacks set it (one small all-reduce per
  step).
- Training logs. Keras averages each step's logs across workers with `reduce(MEAN, axis=0)`, which fails on scalars
  ("Invalid reduction dimension 0"); the logs leave each replica as one-element vectors instead, so the progress bar
  and TensorBoard show the mean over all replicas (the global batch's).
- Inference. `predict_on_batch` splits each batch across all replicas of all processes and gathers the outputs, in
  order, into every process: selection and evaluation are collective and give every process the same numbers.

The strategy must exist before TensorFlow starts its runtime ("Collective ops must be configured at program
startup"), so `run.py` makes the distribution before it loads any data; one strategy per process.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import tensorflow as tf

from improve_nas.adanet.runtime.cluster import Cluster
from improve_nas.adanet.runtime.tf_distribution import MirroredDistribution, _SplitBatchPredictor


@functools.cache
def multi_worker_distribution(cluster: Cluster) -> MultiWorkerDistribution:
    return MultiWorkerDistribution(cluster)


class MultiWorkerDistribution(MirroredDistribution):
    """Synchronous data parallelism over every device of every process in the cluster (GPUs, else the CPU)."""

    name = "multi_worker"

    def __init__(self, cluster: Cluster):  # not MirroredDistribution's: listing devices would start the runtime
        self.cluster = cluster
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.num_workers = cluster.num_workers
        self.is_chief = cluster.is_chief

    @contextlib.contextmanager
    def training(self, model: keras.Model):
        with super().training(model), _stops_agreed(model, self.strategy), _logs_as_vectors(model):
            yield

    def for_inference(self, model: keras.Model):
        return _GatheringPredictor(model, self.strategy)

    def chief_value(self, value: int) -> int:
        # global replica 0 is the chief's first device; float64 holds integers below 2**53 exactly
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(float(value) if context.replica_id_in_sync_group == 0 else 0.0, tf.float64))
        return int(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy())

    def wait_for_chief(self) -> None:
        self.chief_value(0)


def _any_replica(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(1.0 if flag else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy() > 0)


class _AgreedStop:
    """Model mixin: reading `stop_training` asks every process whether its callbacks set it (a collective)."""

    @property
    def stop_training(self) -> bool:
        return _any_replica(self.__dict__["_stop_strategy"], self.__dict__.get("_local_stop_training", False))

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self.__dict__["_local_stop_training"] = bool(value)


@functools.cache
def _agreeing(model_class: type) -> type:
    return type(model_class.__name__, (_AgreedStop, model_class), {})


@contextlib.contextmanager
def _stops_agreed(model: keras.Model, strategy: tf.distribute.Strategy):
    """While training, `fit` ends after the same step in every process (see the module docstring)."""
    model_class = type(model)
    model.__dict__["_stop_strategy"] = strategy
    model.__class__ = _agreeing(model_class)
    try:
        yield
    finally:
        model.__class__ = model_class
        del model.__dict__["_stop_strategy"]
        model.__dict__.pop("_local_stop_training", None)


@contextlib.contextmanager
def _logs_as_vectors(model: keras.Model):
    """While training, each step's scalar logs leave the replicas as `[1]` vectors, which Keras's cross-worker mean
    (`reduce(MEAN, axis=0)`, the one it applies to every step's outputs) averages into the global batch's."""
    get_metrics_result = model.get_metrics_result

    def as_vectors():
        result = get_metrics_result()
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return result
        return {name: tf.reshape(tf.cast(value, tf.float32), [1]) for name, value in result.items()}

    model.get_metrics_result = as_vectors
    try:
        yield
    finally:
        del model.get_metrics_result


class _GatheringPredictor(_SplitBatchPredictor):
    """`predict_on_batch` over all processes: each predicts its replicas' rows, every process gets all rows."""

    def _predict_shares(self, shares):
        outputs = self._strategy.run(lambda x: self._model(x, training=False), args=(shares,))
        return tf.nest.map_structure(lambda value: self._strategy.gather(value, axis=0), outputs)

