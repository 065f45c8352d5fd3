"""`--distribution=mirrored` on the TensorFlow backend: `tf.distribute.MirroredStrategy` over the local devices.

Keras runs `train_step` once per replica on that replica's share of the global batch, and would then differ from one
device in four ways, which `MirroredDistribution.training(model)` corrects while the model trains:

- Loss scale. Keras expects `compute_loss` to return the replica's loss divided by the number of replicas (its own
  does), so that the summed gradients are those of the global batch's mean loss; `IterationModel.compute_loss`
  returns the replica's mean loss. The wrapper divides it.
- Clipping. Keras's TensorFlow optimizer sums the replicas' gradients after `apply`, so per-candidate clipping in
  `apply` would see one replica's gradients. `apply` here sums them first (so clipping sees the global batch's
  gradients, as on one device), and Keras's later sum is skipped. Under a loss-scaling wrapper (mixed_float16) the
  wrapper's `apply` sums, and the optimizer it wraps skips its own sum too.
- Batch norm. Each replica would normalise with its own share's statistics and keep its own moving averages (reads
  see the first replica's). Every `BatchNormalization` runs with `synchronized=True` during training (statistics
  of the global batch, identical moving averages), and is switched back afterwards so that saved models load on
  any backend.
- Lost batches. Before training, `fit` under a strategy reads a batch from its input to build the model; from a
  Python generator (the loop's batches) that batch, and what its iterator prefetched, never reaches training. The
  models here are built already, so that read is skipped (only the optimizer is built, in the strategy's scope).

Not corrected, because only model code could: random draws (augmentation, drop path, dropout) use the same seeds on
every replica, so the i-th example of every replica's share gets the same draws (on JAX they match one device).
Model code must also give an aggregation mode to any non-trainable variable it assigns in training, else each replica
keeps its own value and reads see the first replica's: `ZeroDebiasedEma` (read by selection when `use_evaluator` is
off) uses `aggregation="mean"`, so it tracks the global batch's loss; batch norm is synchronized (above).

Inference: under a strategy, Keras's `predict_on_batch` feeds the whole batch to every replica and concatenates the
replicas' outputs (n rows per example). `for_inference` wraps a model so that `predict_on_batch` splits the batch
(any size) across the replicas instead, in one compiled function per model.
"""

from __future__ import annotations

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf

from improve_nas.adanet.runtime.distribution import Distribution


class MirroredDistribution(Distribution):
    """`tf.distribute.MirroredStrategy` over all GPUs, else over all (logical) CPU devices."""

    name = "mirrored"

    def __init__(self):
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        self.strategy = _strategy(tuple(device.name for device in devices))
        self.num_replicas = self.strategy.num_replicas_in_sync

    def scope(self):
        return self.strategy.scope()

    @contextlib.contextmanager
    def training(self, model: keras.Model):
        optimizer_class = type(model.optimizer)
        # A loss-scaling wrapper (mixed_float16) sums in its own `apply`; the optimizer it wraps must not sum again.
        inner = getattr(model.optimizer, "inner_optimizer", None)
        inner_class = type(inner) if inner is not None else None
        batch_norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
                       if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized]
        model.optimizer.__class__ = _summing_replica_gradients(optimizer_class)
        if inner is not None:
            inner.__class__ = _not_summing_replica_gradients(inner_class)
        model.compute_loss = _divided_by_replicas(model.compute_loss)
        model._maybe_symbolic_build = functools.partial(_build_without_reading_data, model, self.strategy)
        for layer in batch_norms:
            layer.synchronized = True
        try:
            yield
        finally:
            for layer in batch_norms:
                layer.synchronized = False
            del model.compute_loss, model._maybe_symbolic_build  # the class's methods again
            model.optimizer.__class__ = optimizer_class
            if inner is not None:
                inner.__class__ = inner_class

    def for_inference(self, model: keras.Model):
        return _SplitBatchPredictor(model, self.strategy)


@functools.cache
def _strategy(devices: tuple[str, ...]) -> tf.distribute.MirroredStrategy:
    """One strategy per process: a second one over the same devices can reuse the first's collective-op keys."""
    return tf.distribute.MirroredStrategy(list(devices))


def _build_without_reading_data(model: keras.Model, strategy: tf.distribute.Strategy, iterator=None,
                                data_batch=None) -> None:
    """Stands in for Keras's `_maybe_symbolic_build`, which under a strategy takes a batch from `fit`'s input.

    From a Python generator that batch (and whatever its abandoned iterator prefetched) is lost to training, which
    then starts at a later, timing-dependent batch. The models here are built when constructed; only the optimizer
    may still need its variables (created in the strategy's scope, as Keras would).
    """
    del iterator, data_batch
    if not all(layer.built for layer in model._flatten_layers()):
        raise RuntimeError(f"model {model.name} must be built before training under a tf.distribute strategy")
    if not model.optimizer.built:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)


def _divided_by_replicas(compute_loss):
    """`compute_loss` whose result is divided by the number of replicas in sync (Keras's convention)."""

    @functools.wraps(compute_loss)
    def divided(*args, **kwargs):
        loss = compute_loss(*args, **kwargs)
        return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)
    return divided


class _SumReplicaGradients:
    """Optimizer mixin: sums the replicas' gradients on entering `apply`, before any clipping sees them."""

    def apply(self, grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            present = [i for i, grad in enumerate(grads) if grad is not None]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            grads = list(grads)
            for i, grad in zip(present, summed):
                grads[i] = grad
        return super().apply(grads, trainable_variables)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)  # already summed in `apply`


@functools.cache
def _summing_replica_gradients(optimizer_class: type) -> type:
    return type(f"ReplicaSummed{optimizer_class.__name__}", (_SumReplicaGradients, optimizer_class), {})


class _GradientsAlreadySummed:
    """Optimizer mixin for the optimizer inside a loss-scaling wrapper: the wrapper's `apply` summed already."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


@functools.cache
def _not_summing_replica_gradients(optimizer_class: type) -> type:
    return type(f"PreSummed{optimizer_class.__name__}", (_GradientsAlreadySummed, optimizer_class), {})


class _SplitBatchPredictor:
    """Stands in for a model (attributes pass through); `predict_on_batch` splits the batch across the replicas."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self._model = model
        self._strategy = strategy
        self._predict = tf.function(self._predict_shares, reduce_retracing=True)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def _predict_shares(self, shares):
        outputs = self._strategy.run(lambda x: self._model(x, training=False), args=(shares,))
        return tf.nest.map_structure(
            lambda value: tf.concat(self._strategy.experimental_local_results(value), axis=0), outputs)

    def predict_on_batch(self, x):
        shares = np.array_split(np.asarray(x), self._strategy.num_replicas_in_sync)  # any size, in order
        per_replica = self._strategy.experimental_distribute_values_from_function(
            lambda context: shares[context.replica_id_in_sync_group])
        return tf.nest.map_structure(lambda value: value.numpy(), self._predict(per_replica))
