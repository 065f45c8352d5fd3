"""Typed, frozen configuration of a run, and the legacy `k=v,k=v` strings of the original CLI.

Three groups, each a frozen dataclass whose fields carry the original names, types and defaults:

- `HParams`: the model and search hyperparameters of the 2019 `--hparams` flag (docs/original_code.md §2.1), plus a few
  clearly marked extensions of this project.
- `DataParams`: the `--data_params` flag, which the original ignored and this project applies.
- `Config`: the run-level flags of the original trainer (docs/original_code.md §1.1) holding the two groups above.

`Config` is also the settings table: each of its fields is declared with `setting(...)`, whose metadata (help, flag
name, whether it may change on resume, choices and the module that owns them, whether `bench` takes it too) is all
that `improve_nas.settings` needs to generate the trainer's flags, `submit`'s flag check, the bench flags and the
resume rule. Choice lists come from `improve_nas.choices`, so this module imports no Keras.

Parsing follows `tf.contrib.training.HParams.parse` (docs/original_code.md §1.2): values are typed by the default's
type, bools accept true/false (any case) or an integer, and an unknown or repeated name is an error. Every violation
raises `UsageError` with a one-line message naming the bad key or value and the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping

from improve_nas import choices
from improve_nas.errors import UsageError, nearest

FIELD_DEFAULT = object()  # a setting's flag_default when its flag defaults to the field's default


def setting(default: Any = dataclasses.MISSING, *, help: str, resumable: bool,
            default_factory: Any = dataclasses.MISSING, flag: str | None = None, flag_default: Any = FIELD_DEFAULT,
            unset: int | None = None, from_flag: bool = True, bench: bool = False, choices: tuple = (),
            owner: str | None = None) -> Any:
    """Declares one run-level setting: a field of `Config` and the metadata everything else is generated from.

    Args:
      default, default_factory: as for `dataclasses.field`.
      help: the flag's help; `{choices}` is replaced by the choice list (`choices`, else the `owner`'s).
      resumable: whether a run may resume with another value (it does not change what is trained).
      flag: the flag's name, when it differs from the field's.
      flag_default: the flag's default, when it differs from the field's (a group's flag defaults to "").
      unset: the flag value that means None (the original's -1 for tf_random_seed).
      from_flag: whether a flag given on the command line becomes the field as is; False when the entry point
        resolves it (model_dir from --job-dir too, the preset, the `k=v` strings of a group).
      bench: whether `improve-nas bench` takes the flag too.
      choices: the closed list of valid values, checked on construction (from `improve_nas.choices`).
      owner: `module:NAME` of the list the module that builds the value owns (tests check it equals `choices`).
    """
    metadata = dict(help=help, resumable=resumable, flag=flag, flag_default=flag_default, unset=unset,
                    from_flag=from_flag, bench=bench, choices=choices, owner=owner)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def choice(default: str, choices: tuple, *, owner: str, ignore_case: bool = False) -> Any:
    """A field of a group (HParams, DataParams) whose value is one of `choices`, owned by `owner` (`module:NAME`)."""
    return dataclasses.field(default=default, metadata=dict(choices=choices, owner=owner, ignore_case=ignore_case))


@dataclasses.dataclass(frozen=True)
class HParams:
    """Model and search hyperparameters; names, types and defaults of the original (docs/original_code.md §2.1)."""

    num_cells: int = 3  # total normal cells; a multiple of 3. NASNet-A 6@768 is num_cells=18, num_conv_filters=32
    num_conv_filters: int = 10  # base filter count F; the penultimate width is 24·F
    aux_head_weight: float = 0.4  # weight of the aux-head loss when use_aux_head (dead in the original)
    stem_multiplier: float = 3.0  # the stem conv has int(F·stem_multiplier) filters
    drop_path_keep_prob: float = 0.6  # keep probability of the deepest cell at the end of each iteration
    use_aux_head: bool = True  # build the aux head and add its loss (docs/design.md §5)
    dense_dropout_keep_prob: float = 1.0  # dropout keep probability before the logits layer
    filter_scaling_rate: float = 2.0  # filter multiplier at each reduction cell
    num_reduction_layers: int = 2
    data_format: str = choice("NHWC", choices.DATA_FORMATS, owner="improve_nas.models.nasnet:DATA_FORMATS")
    skip_reduction_layer_input: int = 0  # 1: the cell after a reduction skips the reduction output as prev_layer
    use_bounded_activation: bool = False  # relu6 and ±6 clipping
    clip_gradients: int = 5  # global-norm clip per candidate; 0 turns it off. An int, as in the original
    optimizer: str = choice("momentum", choices.OPTIMIZERS, owner="improve_nas.adanet.optimizers:OPTIMIZER_NAMES",
                            ignore_case=True)
    learning_rate_schedule: str = choice(  # restarts every AdaNet iteration
        "cosine", choices.LEARNING_RATE_SCHEDULES, owner="improve_nas.adanet.optimizers:SCHEDULES", ignore_case=True)
    initial_learning_rate: float = 0.025
    weight_decay: float = 5e-4  # L2 as weight_decay·Σw²/2 on conv, separable and dense kernels
    label_smoothing: float = 0.1
    knowledge_distillation: str = choice("adaptive", choices.DISTILLATIONS,
                                         owner="improve_nas.adanet.losses:Distillation")
    model_version: str = "cifar"  # a name suffix only
    adanet_lambda: float = 0.0
    adanet_beta: float = 0.0
    generator: str = choice("simple", choices.GENERATORS, owner="improve_nas.search.generators:GENERATORS")
    boosting_iterations: int = 3
    force_grow: bool = True
    evaluator_batch_size: int = -1  # -1: --batch_size
    evaluator_steps: int = -1  # -1: one full pass over the training partition
    batch_size: int = 32  # mirrors --batch_size; stored only, as in the original
    learn_mixture_weights: bool = False
    mixture_weight_type: str = choice("scalar", choices.MIXTURE_WEIGHT_TYPES,
                                      owner="improve_nas.adanet.ensemblers:WEIGHT_TYPES")
    use_evaluator: bool = True  # select on the training partition; False: EMA of the training AdaNet loss
    # Extensions of this project (not in the 2019 code).
    # train: AdaNet selection on the training partition; holdout: on a validation split
    selection: str = choice("train", choices.SELECTIONS, owner="improve_nas.choices:SELECTIONS")
    holdout_fraction: float = 0.1  # share of the training partition held out when selection=holdout
    use_mixture_bias: bool = False  # learn a bias [K] in the ensemble logits (AdaNet's use_bias)
    # Early stopping (adanet/stopping.py): end the run once the chosen ensemble's selection loss (holdout partition with
    # selection=holdout, else the selection partition) has not improved by more than min_delta for `patience`
    # iterations in a row; 0 trains every iteration. The margin is absolute, in nats: the loss's scale is the task's.
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.001
    # Architecture search (README "Searching architectures"; improve_nas.search).
    # The cells of simple/dynamic: a name of improve_nas.search.space.NAMED_GENOTYPES or a .json file of one genotype
    genotype: str = "nasnet_a"
    search_space: str = choice("nasnet", choices.SEARCH_SPACES, owner="improve_nas.search.space:OP_SETS")
    num_blocks: int = 5  # B, blocks per searched cell (Zoph et al. 2018)
    candidates_per_iteration: int = 3  # K, genotypes random/evolution/controller train per iteration
    population: int = 20  # evolution: the last P candidates (Real et al. 2019 used 100)
    tournament: int = 5  # evolution: S candidates per tournament (Real et al. 2019 used 25)
    parents: str = choice("tournament", choices.PARENTS, owner="improve_nas.search.proposals:PARENTS")
    controller_units: int = 100  # LSTM units of the controller (Zoph et al. 2018)
    controller_learning_rate: float = 0.03  # Adam, one REINFORCE update per iteration (NASNet: 0.00035, with PPO)
    controller_entropy_weight: float = 0.01  # entropy bonus of the REINFORCE loss (NASNet: 0.00001)
    controller_baseline_decay: float = 0.95  # moving-average baseline of the reward (NASNet's; moot with rank rewards)

    def __post_init__(self) -> None:
        _check_choices(self, what="hparam")
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
                     "adanet_beta", "early_stopping_patience", "early_stopping_min_delta"):
            if getattr(self, name) < 0:
                raise UsageError(f"hparam {name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"hparam label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise UsageError(f"hparam holdout_fraction={self.holdout_fraction} must be in (0, 1)")
        for name in ("num_blocks", "candidates_per_iteration", "population", "tournament", "controller_units",
                     "controller_learning_rate"):
            _check_positive(name, getattr(self, name))
        if self.tournament > self.population:
            raise UsageError(f"hparam tournament={self.tournament} is larger than population={self.population}; "
                             f"valid: 1..{self.population}")
        if not 0.0 <= self.controller_baseline_decay < 1.0:
            raise UsageError(f"hparam controller_baseline_decay={self.controller_baseline_decay} must be in [0, 1)")
        if self.controller_entropy_weight < 0:
            raise UsageError(f"hparam controller_entropy_weight={self.controller_entropy_weight} must be >= 0")
        if self.generator in ("evolution", "controller") and self.candidates_per_iteration < 2:
            raise UsageError(f"hparam candidates_per_iteration={self.candidates_per_iteration}: generator "
                             f"{self.generator} ranks the candidates of an iteration against each other; use 2 or more")
        _check_genotype_reference(self.genotype)
        for name in ("evaluator_batch_size", "evaluator_steps"):
            value = getattr(self, name)
            if value == 0 or value < -1:
                raise UsageError(f"hparam {name}={value} must be positive, or -1 for the default")

    @property
    def candidates_trained_together(self) -> int:
        """Subnetworks one iteration trains fused (what the memory check sizes for): 2 for dynamic, K for a search."""
        if self.generator == "dynamic":
            return 2
        return self.candidates_per_iteration if self.generator in choices.SEARCHING_GENERATORS else 1

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

    # basic: random flip + zero-pad and random crop; none
    augmentation: str = choice("basic", choices.AUGMENTATIONS, owner="improve_nas.data.augment:AUGMENTATION_CHOICES")
    cutout: bool = True  # zero one cutout_size² square per training image
    pad: int = 4  # pixels of zero padding before the random crop (basic augmentation)
    cutout_size: int = 16

    def __post_init__(self) -> None:
        _check_choices(self, what="data_param")
        if self.pad < 0:
            raise UsageError(f"data_param pad={self.pad} must be >= 0")
        _check_positive("cutout_size", self.cutout_size, what="data_param")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything one run needs; flags of the original trainer (docs/original_code.md §1.1) plus this project's."""

    dataset: str = setting("", help="One of: {choices}.", resumable=False,
                           owner="improve_nas.data.registry:DATASET_CHOICES", bench=True)
    batch_size: int = setting(32, help="Minibatch size for training; evaluation reads eval_steps batches of it.",
                              resumable=False, bench=True)
    # Total steps over all iterations; each iteration gets train_steps // iterations.
    train_steps: int = setting(1_000_000, help="Total training steps over all AdaNet iterations; each iteration "
                               "trains train_steps // boosting_iterations steps.", resumable=False)
    save_summary_steps: int = setting(2000, help="Steps between TensorBoard summaries.", resumable=True)
    # None (or -1 on the command line): a fresh seed, recorded in env.json. Resuming may leave it unset; a different
    # seed is refused by the run itself (improve_nas.run).
    tf_random_seed: int | None = setting(None, help="Root random seed; -1 or unset draws a fresh one (recorded in "
                                         "env.json).", resumable=True, unset=-1)
    eval_steps: int | None = setting(None, help="Test batches per evaluation; unset evaluates the whole test "
                                     "partition.", resumable=True)
    save_checkpoints_secs: int = setting(600, help="Seconds between checkpoints; 0 turns them off. Exactly one of "
                                         "save_checkpoints_secs and save_checkpoints_steps must be non-zero.",
                                         resumable=True)
    save_checkpoints_steps: int = setting(0, help="Steps between checkpoints; 0 turns them off.", resumable=True)
    keep_checkpoint_max: int = setting(5, help="Most recent checkpoints to keep.", resumable=True)
    # --model_dir, else --job-dir, else $AIP_MODEL_DIR (improve_nas.trainer.trainer.resolve_model_dir).
    model_dir: str = setting("", help="Run directory: checkpoints, iterations, report (local path or gs://).",
                             resumable=True, flag_default=None, from_flag=False)
    data_dir: str | None = setting(None, help="TFDS data directory for cifar10, cifar100 and tfds:NAME (local or "
                                   "gs://).", resumable=True)
    # The preset the run started from, for the record.
    preset: str | None = setting(None, help="Named experiment to start from; flags override it. One of: {choices}.",
                                 resumable=True, owner="improve_nas.presets:PRESETS", from_flag=False, bench=True)
    distribution: str = setting(
        "none", help="none: train on one device; mirrored: data parallel over all local GPUs (else all CPU devices), "
        "each --batch_size batch split evenly across them (TensorFlow MirroredStrategy, JAX DataParallel); "
        "multi_worker: over every device of every process TF_CONFIG names (Vertex AI multi-replica jobs; TensorFlow "
        "only), only the chief writes model_dir.", resumable=True, choices=choices.DISTRIBUTIONS,
        owner="improve_nas.adanet.runtime.distribution:DISTRIBUTIONS")
    # The members' Keras dtype policy: mixed_* compute in bfloat16/float16 with float32 variables; losses, mixture
    # weights and metrics stay float32; mixed_float16 also scales the loss. Fixed for a run (resume checks it).
    precision: str = setting(
        "float32", help="Keras dtype policy of the NASNet members: float32, mixed_bfloat16 or mixed_float16 (compute "
        "in 16 bits, float32 variables; losses, mixture weights and metrics stay float32; mixed_float16 adds dynamic "
        "loss scaling). Cannot change when resuming.", resumable=False, bench=True, choices=choices.PRECISIONS,
        owner="improve_nas.choices:PRECISIONS")
    # Speed only, no result depends on it; halved whenever it runs out of memory.
    inference_batch_size: int | None = setting(
        None, help="Images per inference call in candidate selection and test evaluation (speed only: no result "
        "depends on it); unset: 1024 on a GPU or TPU, 128 on a CPU. Halved whenever it runs out of memory.",
        resumable=True)
    temperature_scaling: bool = setting(
        False, help="Temperature scaling: fit one T for each iteration's chosen ensemble on the selection partition "
        "(minimum NLL), report the test metrics before and after, and export the final ensemble's logits divided "
        "by T.", resumable=False)
    keep_pool: bool = setting(
        True, help="Keep every candidate subnetwork of each iteration, chosen or not: its model and its own logits on "
        "the selection and test rows (iterations/<t>/pool/), so that `improve-nas select` can build other ensembles "
        "from them without training. Cannot change when resuming (a run's pool is whole or absent).", resumable=False)
    hparams: HParams = setting(default_factory=HParams, help="Comma-separated name=value overrides of the "
                               "hyperparameters, e.g. 'num_cells=18,num_conv_filters=32'.", resumable=False,
                               from_flag=False, bench=True)
    data_params: DataParams = setting(default_factory=DataParams, help="Comma-separated name=value overrides of the "
                                      "input pipeline, e.g. 'augmentation=basic,cutout=True'.", resumable=False,
                                      from_flag=False, bench=True)

    def __post_init__(self) -> None:
        for name in ("batch_size", "train_steps", "save_summary_steps", "keep_checkpoint_max"):
            _check_positive(name, getattr(self, name), what="flag")
        _check_choices(self, what="flag")
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
        barely trained member that joined the ensemble (docs/original_code.md §2.2); this project drops them.
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


def _check_choices(group, *, what: str) -> None:
    """Checks every field of `group` declared with a choice list."""
    for field in dataclasses.fields(group):
        if field.metadata.get("choices"):
            value = getattr(group, field.name)
            _check_choice(field.name, value.lower() if field.metadata.get("ignore_case") else value,
                          field.metadata["choices"], what=what)


def _check_choice(name: str, value: Any, choices: tuple, *, what: str = "hparam") -> None:
    if value not in choices:
        raise UsageError(f"{what} {name}={value!r} is invalid; choose one of: {', '.join(map(str, choices))}")


def _check_genotype_reference(value: str) -> None:
    """A named genotype, or a path ending in .json (read when the run starts: `search.space.resolve_genotype`)."""
    from improve_nas.search.space import NAMED_GENOTYPES

    if value not in NAMED_GENOTYPES and not value.endswith(".json"):
        raise UsageError(f"hparam genotype={value!r} is invalid; {nearest(value, NAMED_GENOTYPES)}choose one of: "
                         f"{', '.join(NAMED_GENOTYPES)}, or the path of a .json file holding one genotype")


def _check_positive(name: str, value: float, *, what: str = "hparam") -> None:
    if value <= 0:
        raise UsageError(f"{what} {name}={value} must be positive")
