"""The Python API: `grow` an AdaNet ensemble of any Keras classifier, `train` a configured run, `load_model` an export.

Importing this module imports no Keras: `train` checks its settings before TensorFlow starts, as the CLI does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from improve_nas.errors import UsageError, nearest

# Hparams of `improve_nas.config.HParams` that `grow` accepts as options, under the same names and with the same
# defaults and checks (the others describe NASNet members, which `grow` does not build).
GROW_HPARAMS = ("adanet_beta", "adanet_lambda", "clip_gradients", "early_stopping_min_delta",
                "early_stopping_patience", "evaluator_batch_size", "evaluator_steps", "force_grow",
                "holdout_fraction", "initial_learning_rate", "knowledge_distillation", "label_smoothing",
                "learn_mixture_weights", "learning_rate_schedule", "mixture_weight_type", "optimizer", "selection",
                "use_evaluator", "use_mixture_bias")
_MIXTURE_HPARAMS = ("adanet_beta", "adanet_lambda", "learn_mixture_weights", "mixture_weight_type",
                    "use_mixture_bias")
# Options of `grow` that are not hparams.
GROW_EXTRAS = ("dataset", "ensembler", "rescale", "seed", "strategy", "verbose")
DEFAULT_EPOCHS = 5  # steps_per_iteration's default: this many passes over the training images per iteration
GROW_JSON = "grow.json"
EXPORT_KERAS = os.path.join("export", "ensemble.keras")


@dataclasses.dataclass(frozen=True)
class GrowResult:
    """What `grow` returns.

    Attributes:
      ensemble: the final ensemble as exported (`export/ensemble.keras`): uint8 images [B, H, W, C] of the training
        shape -> `{"logits", "probabilities", "classes"}`.
      report: the run's report, as in `report.json` (its `stopped` says why the run ended where it did).
      rows: one plain dict per iteration: iteration, members, accuracy, loss, error, nll, ece, brier (None for
        iterations written before those were recorded), params, train_seconds.
      model_dir: the run directory.
    """

    ensemble: Any
    report: dict[str, Any]
    rows: list[dict[str, Any]]
    model_dir: str


def grow(build_fn: Callable[[int, tuple], Any], x_train, y_train, x_test, y_test, *, model_dir: str,
         iterations: int = 3, steps_per_iteration: int | None = None, batch_size: int = 32,
         **options) -> GrowResult:
    """Grows an AdaNet ensemble of the Keras classifier `build_fn` makes, one new member per iteration.

    Args:
      build_fn: `build_fn(num_classes, input_shape)` returns a new, untrained `keras.Model` (functional, Sequential
        or a registered subclass) mapping float32 images [B, *input_shape] to logits [B, num_classes] (or to a dict
        with "logits" and, for matrix mixture weights, "features"). It must save to and reload from a `.keras` file
        with the same outputs (members are reloaded on resume and in the export); it is checked before training.
      x_train, x_test: uint8 images [N, H, W, C]. They reach the model as given, cast to float32 (0..255), unless
        `rescale=True`, which maps them to [-1, 1] first. The exported ensemble takes the same uint8 images.
      y_train, y_test: integer labels [N] in [0, K); K is the largest label + 1.
      model_dir: local run directory, laid out as `improve-nas train`'s (report.json, iterations/, export/); calling
        `grow` again on it resumes, or returns the finished run without training.
      iterations: AdaNet iterations (members); a later call may raise it to grow the ensemble further.
      steps_per_iteration: training steps of each member; default: DEFAULT_EPOCHS (5) passes over x_train.
      batch_size: images per training step.
      **options: the hparams named in `GROW_HPARAMS` (improve_nas.config.HParams: same names, defaults and checks,
        e.g. learn_mixture_weights, mixture_weight_type, adanet_lambda, adanet_beta, knowledge_distillation,
        selection, force_grow, early_stopping_patience, early_stopping_min_delta), and:
        strategy: "grow" (default), "solo", "all", or a `improve_nas.adanet.Strategy` instance;
        ensembler: an `improve_nas.adanet.EnsemblerSpec` (or a subclass whose `build` returns a registered Keras
          layer); replaces the mixture-weight hparams, which may then not be given;
        rescale: False (default) or True (pixels to [-1, 1] as `(x / 255 - 0.5) * 2`);
        seed: the run's root seed (default 0); verbose: progress lines (default True);
        dataset: the data set's name in the report (default "arrays").

    Returns:
      A `GrowResult`.

    Raises:
      UsageError: an unknown option or bad value, bad arrays, a model that cannot be saved and reloaded, or a
        model_dir that holds another run; nothing was trained.
    """
    extras, hparams = _split_options(options)
    x_train, y_train, x_test, y_test, num_classes = _check_arrays(x_train, y_train, x_test, y_test)
    if iterations < 1 or batch_size < 1:
        raise UsageError(f"iterations={iterations} and batch_size={batch_size} must be positive")
    if steps_per_iteration is None:
        steps_per_iteration = max(1, math.ceil(DEFAULT_EPOCHS * len(x_train) / batch_size))
    if steps_per_iteration < 1:
        raise UsageError(f"steps_per_iteration={steps_per_iteration} must be positive")
    from improve_nas import run_checks
    from improve_nas.config import Config, DataParams, HParams
    from improve_nas.storage import fileio

    fileio.check_local(model_dir)
    seed = int(extras.get("seed", 0))
    config = Config(dataset=extras.get("dataset", "arrays"), batch_size=batch_size,
                    train_steps=iterations * steps_per_iteration, model_dir=model_dir, tf_random_seed=seed,
                    save_checkpoints_secs=600, save_checkpoints_steps=0,
                    hparams=HParams(boosting_iterations=iterations, batch_size=batch_size, **hparams),
                    data_params=DataParams(augmentation="none", cutout=False))
    record = _grow_record(build_fn, config, extras, hparams, num_classes, (x_train, y_train, x_test, y_test))
    _check_same_grow(model_dir, record)
    run_checks.check_classes(y_train)
    run_checks.check_batch_size(batch_size, len(y_train))

    from improve_nas import keras_members
    from improve_nas.storage import run_lock

    keras_members.check_member(build_fn, num_classes=num_classes, sample=x_train[:8])
    os.makedirs(model_dir, exist_ok=True)
    with run_lock.hold(model_dir):
        return _grow(build_fn, config, extras, record, num_classes, (x_train, y_train, x_test, y_test))


def _grow(build_fn, config, extras: dict, record: dict, num_classes: int, arrays) -> GrowResult:
    import keras

    from improve_nas import experiment, keras_members
    from improve_nas.adanet.runtime.engine import grow_ensemble
    from improve_nas.adanet.runtime.run_directory import RunDirectory
    from improve_nas.data import ImageDataset, Rescale
    from improve_nas.export import check_export, export_final_ensemble
    from improve_nas.report import build_report, write_report
    from improve_nas.storage import fileio

    x_train, y_train, x_test, y_test = arrays
    dataset = ImageDataset(name=config.dataset, num_classes=num_classes, image_shape=x_train.shape[1:],
                           x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    settings = experiment.engine_settings(config, seed=config.tf_random_seed)
    overrides = {key: extras[key] for key in ("strategy", "ensembler") if key in extras}
    settings = dataclasses.replace(settings, verbose=bool(extras.get("verbose", True)), **overrides)

    def preprocessing(layer_seed=None):
        return Rescale() if extras.get("rescale") else keras_members.CastToFloat32()

    run_dir = RunDirectory(config.model_dir)
    fileio.remove_leftovers(config.model_dir)
    fileio.write_json(run_dir.file(GROW_JSON), record)

    def write(entries) -> dict:
        report = build_report(dataset=config.dataset, num_classes=num_classes, iterations=entries,
                              hparams=config.hparams)
        write_report(config.model_dir, report)
        return report

    before = len(run_dir.verify())
    grow_ensemble(run_dir=run_dir, settings=settings, data=experiment.partitions(dataset, config, seed=settings.seed),
                  generator=keras_members.KerasGenerator(build_fn, record["builder"]),
                  make_preprocessing=preprocessing, on_iteration_end=lambda summary: write(run_dir.summaries()))
    entries = run_dir.summaries()
    if len(entries) != before or check_export(run_dir):  # a new final ensemble, or no intact export of it
        export_final_ensemble(run_dir, preprocessing=preprocessing(), image_shape=dataset.image_shape)
    report = write(entries)
    ensemble = keras.saving.load_model(run_dir.file(EXPORT_KERAS), compile=False)
    return GrowResult(ensemble=ensemble, report=report, rows=rows(report), model_dir=config.model_dir)


def rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-iteration rows of a report as plain dicts (e.g. for `pandas.DataFrame(rows)`)."""
    return [{"iteration": entry["iteration"], "members": len(entry["members"]),
             "accuracy": entry["ensemble"]["accuracy"], "loss": entry["ensemble"]["loss"],
             **{key: entry["ensemble"].get(key) for key in ("error", "nll", "ece", "brier")},
             "params": entry["trainable_params"], "train_seconds": entry["train_seconds"]}
            for entry in report["iterations"]]


def _split_options(options: Mapping[str, Any]) -> tuple[dict, dict]:
    valid = sorted(GROW_HPARAMS + GROW_EXTRAS)
    for name in options:
        if name not in valid:
            raise UsageError(f"unknown option {name!r} of grow; {nearest(name, valid)}valid options: "
                             f"{', '.join(valid)}")
    extras = {name: value for name, value in options.items() if name in GROW_EXTRAS}
    hparams = {name: value for name, value in options.items() if name in GROW_HPARAMS}
    if "ensembler" in extras:
        _check_ensembler(extras["ensembler"], [name for name in _MIXTURE_HPARAMS if name in hparams])
    if "strategy" in extras:
        from improve_nas.adanet.strategies import make_strategy

        make_strategy(extras["strategy"])  # a name it knows, or a Strategy instance
    return extras, hparams


def _check_ensembler(ensembler, mixture_options: list[str]) -> None:
    from improve_nas.adanet.ensemblers import EnsemblerSpec

    if not isinstance(ensembler, EnsemblerSpec):
        raise UsageError(f"ensembler must be an improve_nas.adanet.EnsemblerSpec (or a subclass), got "
                         f"{type(ensembler).__name__}")
    if mixture_options:
        raise UsageError(f"give either ensembler or the mixture-weight options ({', '.join(mixture_options)}), "
                         "not both: the ensembler already says how members are mixed")


def _check_arrays(x_train, y_train, x_test, y_test):
    """The arrays as uint8 images and int32 labels, and the class count; one line for anything wrong."""
    arrays = {"x_train": np.asarray(x_train), "x_test": np.asarray(x_test)}
    for name, x in arrays.items():
        if x.dtype != np.uint8 or x.ndim != 4:
            raise UsageError(f"{name} must be uint8 images [N, H, W, C] (raw pixels 0..255), got {x.dtype} "
                             f"{list(x.shape)}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise UsageError(f"x_train and x_test images differ in shape: {list(arrays['x_train'].shape[1:])} and "
                         f"{list(arrays['x_test'].shape[1:])}")
    labels = {}
    for name, y, x in (("y_train", y_train, arrays["x_train"]), ("y_test", y_test, arrays["x_test"])):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"{name} must be integer class labels [N] matching its {len(x)} images, got "
                             f"{y.dtype} {list(y.shape)}")
        if len(y) and y.min() < 0:
            raise UsageError(f"{name} holds a negative label ({int(y.min())}); labels are 0..K-1")
        labels[name] = y.astype(np.int32)
    if not len(labels["y_test"]):
        raise UsageError("x_test is empty: the ensemble is chosen and reported on test images")
    num_classes = int(max(labels["y_train"].max(initial=0), labels["y_test"].max(initial=0))) + 1
    return arrays["x_train"], labels["y_train"], arrays["x_test"], labels["y_test"], num_classes


def _grow_record(build_fn, config, extras: dict, hparams: dict, num_classes: int, arrays) -> dict:
    """What a resumed `grow` must agree on (all but `iterations`): written to grow.json."""
    from improve_nas import keras_members

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"builder": keras_members.builder_name(build_fn), "num_classes": num_classes,
            "image_shape": list(arrays[0].shape[1:]), "data_sha256": digest.hexdigest(),
            "batch_size": config.batch_size, "steps_per_iteration": config.iteration_steps,
            "iterations": config.hparams.boosting_iterations, "seed": config.tf_random_seed,
            "rescale": bool(extras.get("rescale", False)), "hparams": dict(sorted(hparams.items())),
            "strategy": _describe(extras.get("strategy", "grow")), "ensembler": _describe(extras.get("ensembler"))}


def _describe(value) -> Any:
    """A JSON-comparable description of a strategy or ensembler given by name or as an object."""
    if value is None or isinstance(value, str):
        return value
    return repr(value) if dataclasses.is_dataclass(value) else f"{type(value).__module__}.{type(value).__qualname__}"


def _check_same_grow(model_dir: str, record: dict) -> None:
    if os.path.exists(os.path.join(model_dir, "config.json")):
        raise UsageError(f"model_dir {model_dir!r} holds a run of improve-nas train; resume it with improve_nas.train "
                         "or the CLI, or give grow a new model_dir")
    path = os.path.join(model_dir, GROW_JSON)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as file:
            stored = json.load(file)
    except (OSError, ValueError) as error:
        raise UsageError(f"{path} is damaged ({type(error).__name__}); delete it to start over") from None
    differing = sorted(key for key in set(stored) | set(record)
                       if key != "iterations" and stored.get(key) != json.loads(json.dumps(record.get(key))))
    if differing:
        raise UsageError(f"model_dir {model_dir!r} holds a grow run with other settings (differing: "
                         f"{', '.join(differing)}); use a new model_dir or the original settings")


def train(preset: str | None = None, *, force_unlock: bool = False, **settings) -> dict:
    """The CLI's `improve-nas train` from Python: the same configuration, checks and run directory.

    Args:
      preset: a preset name (`improve_nas.presets.PRESETS`), or None.
      force_unlock: take model_dir's lock from whoever holds it (as `--force_unlock`).
      **settings: run settings by their flag names (model_dir, dataset, batch_size, train_steps, ...), overriding
        the preset's; `hparams` and `data_params` as the legacy "name=value,..." strings or as dicts.

    Returns:
      The run's report (the content of report.json).
    """
    if not settings.get("model_dir"):
        raise UsageError("train needs model_dir=<local path or gs://BUCKET/PATH>")
    from improve_nas.presets import resolve_config

    groups = {key: _overrides(key, settings.pop(key, "")) for key in ("hparams", "data_params")}
    config = resolve_config(preset=preset, flags=settings, **groups)
    if config.dataset:
        from improve_nas.data import validate_dataset_spec

        validate_dataset_spec(config.dataset)
    grown = os.path.join(config.model_dir, GROW_JSON)
    if "://" not in config.model_dir and os.path.exists(grown):
        raise UsageError(f"model_dir {config.model_dir!r} holds a run of improve_nas.grow; resume it with grow")
    from improve_nas import run

    return run.train(config, force_unlock=force_unlock)


def _overrides(name: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ",".join(f"{key}={item}" for key, item in value.items())
    raise UsageError(f"{name} must be a 'name=value,...' string or a dict, got {type(value).__name__}")


def load_model(path: str):
    """Loads an exported ensemble: `export/ensemble.keras`, or the run directory (or export/ directory) holding it.

    Registers the classes an export holds first, so no other import is needed (a `grow` run whose model has custom
    layers needs the module that registers them imported, as for any Keras model).
    """
    candidates = [path, os.path.join(path, "ensemble.keras"), os.path.join(path, EXPORT_KERAS)]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise UsageError(f"no exported ensemble at {path!r}: give export/ensemble.keras or the run directory holding "
                         "it (a run exports when its last iteration finishes)")
    import keras

    from improve_nas import serving  # noqa: F401  registers the export's classes

    return keras.saving.load_model(found, compile=False)
