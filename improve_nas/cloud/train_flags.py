"""The trainer's flags as `improve-nas submit` sees them: parsed, merged and checked on the submitting machine.

Submit must reject a bad flag or hparam before it builds or uploads anything, so it resolves the job's flags into a
`Config` exactly as `improve_nas.trainer.trainer` will on Vertex AI. It does not import the trainer's absl flag
module for that: defining those flags pulls in the data package and with it TensorFlow (seconds of start-up), and
parsing into absl's global FLAGS would clobber the caller's. `TRAIN_FLAGS` mirrors `improve_nas/trainer/flags.py`
instead, and `tests/test_cloud.py` fails if the two drift apart.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from improve_nas.config import Config
from improve_nas.errors import UsageError

# Flag name -> value type, as defined in improve_nas/trainer/flags.py (absl integer, string or boolean flags).
TRAIN_FLAGS: dict[str, type] = {
    "batch_size": int, "train_steps": int, "save_summary_steps": int, "hparams": str, "dataset": str,
    "tf_random_seed": int, "eval_steps": int, "save_checkpoints_secs": int, "save_checkpoints_steps": int,
    "data_params": str, "keep_checkpoint_max": int, "job-dir": str, "model_dir": str, "preset": str, "data_dir": str,
    "distribution": str, "precision": str, "inference_batch_size": int, "force_unlock": bool,
}
_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}  # absl's spellings
# The flags that become `Config` fields when given (improve_nas.trainer.flags.CONFIG_FLAGS).
CONFIG_FLAGS = ("batch_size", "train_steps", "save_summary_steps", "dataset", "tf_random_seed", "eval_steps",
                "save_checkpoints_secs", "save_checkpoints_steps", "keep_checkpoint_max", "data_dir",
                "distribution", "precision", "inference_batch_size")


def parse_train_flags(argv: Iterable[str], *, origin: str = "train flags") -> dict[str, str]:
    """Parses trainer flags given as `--name=value` or `--name value` (absl syntax).

    Args:
      argv: the flags, e.g. `["--preset=smoke", "--dataset", "fake"]`.
      origin: where they come from, for error messages (`train flags`, or the spec's `...args` field).

    Returns:
      Flag name -> value as written, in first-seen order; a repeated flag keeps its last value, as absl does.

    Raises:
      UsageError: a positional argument, an unknown flag, a missing value, or a non-integer for an integer flag.
    """
    tokens = list(argv)
    flags: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise UsageError(f"{origin}: unexpected argument {token!r}; train flags look like --name=value")
        name, separator, value = token.lstrip("-").partition("=")
        if not separator and TRAIN_FLAGS.get(name) is bool:  # absl's --flag / --noflag
            separator, value = "=", "true"
        elif not separator and name.startswith("no") and TRAIN_FLAGS.get(name[2:]) is bool:
            name, separator, value = name[2:], "=", "false"
        if name not in TRAIN_FLAGS:
            raise UsageError(f"{origin}: unknown train flag --{name}; valid flags: {', '.join(sorted(TRAIN_FLAGS))}")
        if not separator:
            if index == len(tokens):
                raise UsageError(f"{origin}: flag --{name} needs a value")
            value = tokens[index]
            index += 1
        _typed(name, value, origin)
        flags[name] = value
    return flags


def merge_train_flags(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """`base` (the spec's args) with `overrides` (the command line's) replacing it key by key."""
    merged = dict(base)
    merged.update(overrides)
    return merged


def format_train_flags(flags: Mapping[str, str]) -> list[str]:
    """The flags as one `--name=value` argument each (unambiguous, whatever the value starts with)."""
    return [f"--{name}={value}" for name, value in flags.items()]


def model_dir_flag(flags: Mapping[str, str]) -> str | None:
    """The run directory the trainer will use: --model_dir, else --job-dir (as `trainer.resolve_model_dir`)."""
    return flags.get("model_dir") or flags.get("job-dir") or None


def resolve_train_config(flags: Mapping[str, str], *, model_dir: str) -> Config:
    """The `Config` the trainer will build from `flags`, and every check it makes before touching model_dir.

    Args:
      flags: parsed train flags (see `parse_train_flags`).
      model_dir: the run directory the job will use.

    Raises:
      UsageError: unknown preset, hparam or data_param, a bad value, a missing or invalid dataset.
    """
    from improve_nas.presets import resolve_config

    typed = {name: _typed(name, value, "train flags") for name, value in flags.items()}
    explicit: dict[str, Any] = {name: typed[name] for name in CONFIG_FLAGS if name in typed}
    if explicit.get("tf_random_seed") == -1:  # the original's sentinel for "no seed"
        explicit["tf_random_seed"] = None
    config = resolve_config(preset=typed.get("preset"), flags=dict(explicit, model_dir=model_dir),
                            hparams=typed.get("hparams", ""), data_params=typed.get("data_params", ""))
    if not config.dataset:
        raise UsageError("flag --dataset is required (or a --preset that sets it)")
    if not config.dataset.startswith("npz:"):  # an npz path names a file on the training machine, not this one
        from improve_nas.data import validate_dataset_spec  # deferred: imports Keras

        validate_dataset_spec(config.dataset)
    return config


def _typed(name: str, value: str, origin: str) -> Any:
    if TRAIN_FLAGS[name] is bool:
        if value.lower() not in _BOOLEANS:
            raise UsageError(f"{origin}: flag --{name}={value!r} is not true or false")
        return _BOOLEANS[value.lower()]
    if TRAIN_FLAGS[name] is int:
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{origin}: flag --{name}={value!r} is not an integer") from None
    return value
