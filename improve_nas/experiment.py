"""The one seam between improve_nas and the engine: a `Config` and a data set -> what `grow_ensemble` needs.

`train` (`improve_nas.run`), `bench` and the tests all call `experiment`, so they train the same thing from the same
configuration: the engine settings, the numpy partitions, the NASNet generator and the augmentation factory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from improve_nas.config import Config
from improve_nas.data import ImageDataset
from improve_nas.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The engine's inputs for one configuration (the arguments of `adanet.engine.grow_ensemble` of that name)."""

    settings: Any  # adanet.engine.EngineSettings
    data: Any  # adanet.engine.Partitions
    generator: Any  # adanet.subnetwork.Generator
    make_preprocessing: Callable[[int], Any]  # seed -> the augmentation layer (a fresh one per iteration)


def experiment(config: Config, dataset: ImageDataset, *, seed: int, augmentation_class: type | None = None
               ) -> Experiment:
    """The engine's inputs for `config` on `dataset`, with root seed `seed`.

    Args:
      config: the run's configuration.
      dataset: the loaded data set `config.dataset` names.
      seed: the run's root seed (the engine derives every other seed from it).
      augmentation_class: `ImageAugmentation` or a subclass (the bench's counts its traces); None: the plain one.

    Raises:
      UsageError: `selection=holdout` leaves no training or no selection examples.
    """
    import improve_nas.models.nasnet  # noqa: F401  registers NASNet with Keras: members saved earlier load on resume
    from improve_nas.search.generators import make_generator

    data = partitions(dataset, config, seed=seed)
    generator = make_generator(config.hparams, iteration_steps=config.iteration_steps, seed=seed,
                               dtype=config.precision)
    return Experiment(settings=engine_settings(config, seed=seed), data=data, generator=generator,
                      make_preprocessing=lambda layer_seed: make_augmentation(
                          config, seed=layer_seed, augmentation_class=augmentation_class))


def engine_settings(config: Config, *, seed: int):
    """The engine's view of a configuration."""
    from improve_nas.adanet.ensemblers import EnsemblerSpec
    from improve_nas.adanet.iteration_model import LossSpec
    from improve_nas.adanet.runtime.engine import EngineSettings

    hp = config.hparams
    return EngineSettings(
        num_iterations=hp.boosting_iterations, iteration_steps=config.iteration_steps,
        batch_size=config.batch_size, optimizer=hp.optimizer, learning_rate=hp.initial_learning_rate,
        schedule=hp.learning_rate_schedule, clip_norm=float(hp.clip_gradients),
        loss=LossSpec(label_smoothing=hp.label_smoothing, distillation=hp.knowledge_distillation,
                      aux_head_weight=hp.aux_head_weight),
        ensembler=EnsemblerSpec(weight_type=hp.mixture_weight_type, adanet_lambda=hp.adanet_lambda,
                                adanet_beta=hp.adanet_beta, use_bias=hp.use_mixture_bias,
                                learn_mixture_weights=hp.learn_mixture_weights),
        force_grow=hp.force_grow, use_evaluator=hp.use_evaluator or hp.selection == "holdout",
        evaluator_batch_size=hp.resolved_evaluator_batch_size, evaluator_steps=hp.resolved_evaluator_steps,
        eval_batch_size=config.batch_size, eval_steps=config.eval_steps,
        inference_batch_size=config.inference_batch_size,
        checkpoint_steps=config.save_checkpoints_steps, checkpoint_secs=config.save_checkpoints_secs,
        keep_checkpoint_max=config.keep_checkpoint_max, seed=seed,
        jit_compile=False if _backend() == "tensorflow" else "auto", distribution=config.distribution,
        # multi_worker: from the host; device variables would be broadcast from the chief, and uint8 images cannot be
        data_on_device=config.distribution != "multi_worker", temperature_scaling=config.temperature_scaling,
        early_stopping_patience=hp.early_stopping_patience,
        early_stopping_min_delta=hp.early_stopping_min_delta, keep_pool=config.keep_pool)


def partitions(dataset: ImageDataset, config: Config, *, seed: int):
    """Training, selection and test arrays; `selection=holdout` carves the selection split out of training."""
    from improve_nas.adanet.runtime.engine import Partitions

    return Partitions(**partition_arrays(dataset, config, seed=seed))


def partition_arrays(dataset: ImageDataset, config: Config, *, seed: int) -> dict:
    """The arrays of `partitions`, by field name, without importing Keras (for the checks before training)."""
    x_train, y_train = dataset.x_train, dataset.y_train
    x_select, y_select = x_train, y_train
    if config.hparams.selection == "holdout":
        import numpy as np

        order = np.random.default_rng([seed, 7]).permutation(len(x_train))
        cut = int(round(len(x_train) * config.hparams.holdout_fraction))
        if cut < 1 or cut >= len(x_train):
            raise UsageError(f"hparam holdout_fraction={config.hparams.holdout_fraction} leaves no training or no "
                             f"holdout examples out of {len(x_train)}")
        x_select, y_select = x_train[order[:cut]], y_train[order[:cut]]
        x_train, y_train = x_train[order[cut:]], y_train[order[cut:]]
    return dict(x_train=x_train, y_train=y_train, x_select=x_select, y_select=y_select,
                x_test=dataset.x_test, y_test=dataset.y_test, num_classes=dataset.num_classes)


def make_augmentation(config: Config, *, seed: int, augmentation_class: type | None = None):
    """The augmentation layer `config.data_params` describes (also the export's preprocessing)."""
    from improve_nas.data.augment import ImageAugmentation

    params = config.data_params
    return (augmentation_class or ImageAugmentation)(augmentation=params.augmentation, cutout=params.cutout,
                                                     pad=params.pad, cutout_size=params.cutout_size, seed=seed)


def _backend() -> str:
    import keras

    return keras.backend.backend()
