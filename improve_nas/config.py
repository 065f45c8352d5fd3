"""Typed, frozen configuration of a run, and the legacy `k=v,k=v` strings of the original CLI.

Three groups, each a frozen dataclass whose fields carry the original names, types and defaults:

- `HParams`: the model and search hyperparameters of the 2019 `--hparams` flag (SPEC_ORIGINAL §2.1), plus a few
  clearly marked extensions of this project.
- `DataParams`: the `--data_params` flag, which the original ignored and this project applies.
- `Config`: the run-level flags of the original trainer (SPEC_ORIGINAL §1.1) holding the two groups above.

Parsing follows `tf.contrib.training.HParams.parse` (SPEC_ORIGINAL §1.2): values are typed by the default's type,
bools accept true/false (any case) or an integer, and an unknown or repeated name is an error. Every violation raises
`UsageError` with a one-line message naming the bad key or value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

from improve_nas.errors import UsageError, nearest

OPTIMIZERS = ("adagrad", "adam", "lazy_adam", "momentum", "rmsprop", "sgd")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
KNOWLEDGE_DISTILLATION = ("adaptive", "born_again", "none")
GENERATORS = ("simple", "dynamic")
MIXTURE_WEIGHT_TYPES = ("scalar", "vector", "matrix")
DATA_FORMATS = ("NHWC", "NCHW")
SELECTION = ("train", "holdout")
AUGMENTATIONS = ("basic", "none")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")  # improve_nas.adanet.distribution
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policy names of the NASNet members


@dataclasses.dataclass(frozen=True)
class HParams:
    """Model and search hyperparameters; names, types and defaults of the original (SPEC_ORIGINAL §2.1)."""

    num_cells: int = 3  # total normal cells; a multiple of 3. NASNet-A 6@768 is num_cells=18, num_conv_filters=32
    num_conv_filters: int = 10  # base filter count F; the penultimate width is 24·F
    aux_head_weight: float = 0.4  # weight of the aux-head loss when use_aux_head (dead in the original)
    stem_multiplier: float = 3.0  # the stem conv has int(F·stem_multiplier) filters
    drop_path_keep_prob: float = 0.6  # keep probability of the deepest cell at the end of each iteration
    use_aux_head: bool = True  # build the aux head and add its loss (DESIGN §5)
    dense_dropout_keep_prob: float = 1.0  # dropout keep probability before the logits layer
    filter_scaling_rate: float = 2.0  # filter multiplier at each reduction cell
    num_reduction_layers: int = 2
    data_format: str = "NHWC"
    skip_reduction_layer_input: int = 0  # 1: the cell after a reduction skips the reduction output as prev_layer
    use_bounded_activation: bool = False  # relu6 and ±6 clipping
    clip_gradients: int = 5  # global-norm clip per candidate; 0 turns it off. An int, as in the original
    optimizer: str = "momentum"
    learning_rate_schedule: str = "cosine"  # restarts every AdaNet iteration
    initial_learning_rate: float = 0.025
    weight_decay: float = 5e-4  # L2 as weight_decay·Σw²/2 on conv, separable and dense kernels
    label_smoothing: float = 0.1
    knowledge_distillation: str = "adaptive"
    model_version: str = "cifar"  # a name suffix only
    adanet_lambda: float = 0.0
    adanet_beta: float = 0.0
    generator: str = "simple"
    boosting_iterations: int = 3
    force_grow: bool = True
    evaluator_batch_size: int = -1  # -1: --batch_size
    evaluator_steps: int = -1  # -1: one full pass over the training partition
    batch_size: int = 32  # mirrors --batch_size; stored only, as in the original
    learn_mixture_weights: bool = False
    mixture_weight_type: str = "scalar"
    use_evaluator: bool = True  # select on the training partition; False: EMA of the training AdaNet loss
    # Extensions of this project (not in the 2019 code).
    selection: str = "train"  # train: AdaNet selection on the training partition; holdout: on a validation split
    holdout_fraction: float = 0.1  # share of the training partition held out when selection=holdout
    use_mixture_bias: bool = False  # learn a bias [K] in the ensemble logits (AdaNet's use_bias)

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer.lower(), OPTIMIZERS)
        _check_choice("learning_rate_schedule", self.learning_rate_schedule.lower(), LEARNING_RATE_SCHEDULES)
        _check_choice("knowledge_distillation", self.knowledge_distillation, KNOWLEDGE_DISTILLATION)
        _check_choice("generator", self.generator, GENERATORS)
        _check_choice("mixture_weight_type", self.mixture_weight_type, MIXTURE_WEIGHT_TYPES)
        _check_choice("data_format", self.data_format, DATA_FORMATS)
        _check_choice("selection", self.selection, SELECTION)
        _check_choice("skip_reduction_layer_input", self.skip_reduction_layer_input, (0, 1))
        if self.num_cells <= 0 or self.num_cells % 3:
            raise UsageError(f"hparam num_cells={self.num_cells} must be a positive multiple of 3 (3, 6, ..., 18)")
        for name in ("num_conv_filters", "boosting_iterations", "batch_size"):
            _check_positive(name, getattr(self, name))
        for name in ("stem_multiplier", "filter_scaling_rate", "initial_learning_rate"):
            _check_positive(name, getattr(self, name))
        for name in ("drop_path_keep_prob", "dense_dropout_keep_prob"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise UsageError(f"hparam {name}={value} must be a probability in (0, 1]")
        for name in ("num_reduction_layers", "clip_gradients", "weight_decay", "aux_head_weight", "adanet_lambda",
                     "adanet_beta"):
            if getattr(self, name) < 0:
                raise UsageError(f"hparam {name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"hparam label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UsageError(f"hparam holdout_fraction={self.holdout_fraction} must be in (0, 1)")
        for name in ("evaluator_batch_size", "evaluator_steps"):
            value = getattr(self, name)
            if value == 0 or value < -1:
                raise UsageError(f"hparam {name}={value} must be positive, or -1 for the default")

    @property
    def resolved_evaluator_batch_size(self) -> int:
        return self.batch_size if self.evaluator_batch_size < 0 else self.evaluator_batch_size

    @property
    def resolved_evaluator_steps(self) -> int | None:
        """Batches per selection pass; None is one full pass."""
        return None if self.evaluator_steps < 0 else self.evaluator_steps


@dataclasses.dataclass(frozen=True)
class DataParams:
    """Input-pipeline parameters of `--data_params` (applied here; ignored by the 2019 code)."""

    augmentation: str = "basic"  # basic: random flip + zero-pad and random crop; none
    cutout: bool = True  # zero one cutout_size² square per training image
    pad: int = 4  # pixels of zero padding before the random crop (basic augmentation)
    cutout_size: int = 16

    def __post_init__(self) -> None:
        _check_choice("augmentation", self.augmentation, AUGMENTATIONS, what="data_param")
        if self.pad < 0:
            raise UsageError(f"data_param pad={self.pad} must be >= 0")
        _check_positive("cutout_size", self.cutout_size, what="data_param")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one run needs; flags of the original trainer (SPEC_ORIGINAL §1.1) plus this project's."""

    dataset: str = ""
    batch_size: int = 32
    train_steps: int = 1_000_000  # total steps over all iterations; each iteration gets train_steps // iterations
    save_summary_steps: int = 2000
    tf_random_seed: int | None = None  # None (or -1 on the command line): a fresh seed, recorded in env.json
    eval_steps: int | None = None  # test batches per evaluation; None: the whole test partition
    save_checkpoints_secs: int = 600
    save_checkpoints_steps: int = 0
    keep_checkpoint_max: int = 5
    model_dir: str = ""
    data_dir: str | None = None  # TFDS data directory (local or gs://)
    preset: str | None = None  # the preset the run started from, for the record
    # none: one device; mirrored: data parallel over all local devices; multi_worker: over all TF_CONFIG workers
    distribution: str = "none"
    # The members' Keras dtype policy: mixed_* compute in bfloat16/float16 with float32 variables; losses, mixture
    # weights and metrics stay float32; mixed_float16 also scales the loss. Fixed for a run (resume checks it).
    precision: str = "float32"
    # Images per inference call in selection and test evaluation: speed only, no result depends on it. None: 1,024 on
    # an accelerator, 128 on a CPU; halved whenever it runs out of memory.
    inference_batch_size: int | None = None
    hparams: HParams = dataclasses.field(default_factory=HParams)
    data_params: DataParams = dataclasses.field(default_factory=DataParams)

    def __post_init__(self) -> None:
        for name in ("batch_size", "train_steps", "save_summary_steps", "keep_checkpoint_max"):
            _check_positive(name, getattr(self, name), what="flag")
        _check_choice("distribution", self.distribution, DISTRIBUTIONS, what="flag")
        _check_choice("precision", self.precision, PRECISIONS, what="flag")
        if self.inference_batch_size is not None and self.inference_batch_size <= 0:
            raise UsageError(f"flag inference_batch_size={self.inference_batch_size} must be positive (omit it to "
                             "choose by device)")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise UsageError(f"flag eval_steps={self.eval_steps} must be positive (omit it for the whole test set)")
        if self.save_checkpoints_secs < 0 or self.save_checkpoints_steps < 0:
            raise UsageError("flags save_checkpoints_secs and save_checkpoints_steps must be >= 0")
        if (self.save_checkpoints_secs == 0) == (self.save_checkpoints_steps == 0):
            raise UsageError(
                f"exactly one of save_checkpoints_secs={self.save_checkpoints_secs} and "
                f"save_checkpoints_steps={self.save_checkpoints_steps} must be non-zero")
        if self.train_steps < self.hparams.boosting_iterations:
            raise UsageError(
                f"flag train_steps={self.train_steps} must be at least boosting_iterations="
                f"{self.hparams.boosting_iterations} (one step per iteration)")
        if self.hparams.batch_size != self.batch_size:
            # The hparam mirrors the flag, as in the original; one source of truth.
            object.__setattr__(self, "hparams", dataclasses.replace(self.hparams, batch_size=self.batch_size))

    @property
    def iteration_steps(self) -> int:
        """Steps of every AdaNet iteration: int(train_steps / boosting_iterations).

        Leftover steps (train_steps % boosting_iterations) are not trained: the original spent them on an extra,
        barely trained member that joined the ensemble (SPEC_ORIGINAL §2.2); this project drops them.
        """
        return self.train_steps // self.hparams.boosting_iterations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        values = dict(values)
        _reject_unknown(cls, values, "config key")
        values["hparams"] = _from_mapping(HParams, values.get("hparams", {}), "hparam")
        values["data_params"] = _from_mapping(DataParams, values.get("data_params", {}), "data_param")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))


def parse_overrides(text: str, group: type, *, what: str) -> dict[str, Any]:
    """Parses a legacy `name=value,name=value` string into typed overrides of `group`'s fields.

    Args:
      text: the flag value, e.g. `"num_cells=18,use_aux_head=False"`; empty means no overrides.
      group: `HParams` or `DataParams`.
      what: `"hparam"` or `"data_param"`, used in error messages.

    Returns:
      A dict from field name to a value of the field's type.

    Raises:
      UsageError: malformed pair, unknown or repeated name, or a value that does not parse as the field's type.
    """
    overrides: dict[str, Any] = {}
    types = _field_types(group)
    for pair in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"malformed {what} {pair!r}: expected name=value")
        if name not in types:
            raise UsageError(f"unknown {what} {name!r}; {nearest(name, types)}valid names: {', '.join(sorted(types))}")
        if name in overrides:
            raise UsageError(f"{what} {name!r} given twice")
        overrides[name] = parse_value(name, raw.strip(), types[name], what=what)
    return overrides


def parse_value(name: str, raw: str, kind: type, *, what: str) -> Any:
    """Parses one value by the type of the field's default, as the original HParams did."""
    try:
        if kind is bool:
            if raw.lower() in ("true", "false"):
                return raw.lower() == "true"
            return bool(int(raw))
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        choices = "true, false, 1 or 0" if kind is bool else f"a value of type {kind.__name__}"
        raise UsageError(f"{what} {name}={raw!r} is not {choices}") from None


def _field_types(group: type) -> dict[str, type]:
    hints = typing.get_type_hints(group)
    return {field.name: hints[field.name] for field in dataclasses.fields(group)}


def _from_mapping(group: type, values: Mapping[str, Any], what: str):
    if isinstance(values, group):
        return values
    _reject_unknown(group, values, what)
    return group(**values)


def _reject_unknown(group: type, values: Mapping[str, Any], what: str) -> None:
    known = {field.name for field in dataclasses.fields(group)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"unknown {what} {unknown[0]!r}; {nearest(unknown[0], known)}valid names: "
                         f"{', '.join(sorted(known))}")


def _check_choice(name: str, value: Any, choices: tuple, *, what: str = "hparam") -> None:
    if value not in choices:
        raise UsageError(f"{what} {name}={value!r} is invalid; choose one of: {', '.join(map(str, choices))}")


def _check_positive(name: str, value: float, *, what: str = "hparam") -> None:
    if value <= 0:
        raise UsageError(f"{what} {name}={value} must be positive")
