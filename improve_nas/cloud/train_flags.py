"""The trainer's flags as `improve-nas submit` sees them: parsed, merged and checked on the submitting machine.

Submit must reject a bad flag or hparam before it builds or uploads anything, so it resolves the job's flags into a
`Config` exactly as `improve_nas.trainer.trainer` will on Vertex AI. It does not import the trainer's absl flag
module for that (parsing into absl's global FLAGS would clobber the caller's): both are generated from the settings
table (`improve_nas.settings`), so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from improve_nas import settings
from improve_nas.config import Config
from improve_nas.errors import UsageError

# Flag name -> value type of every flag of improve_nas/trainer/flags.py (absl integer, string or boolean flags).
TRAIN_FLAGS: dict[str, type] = settings.flag_types(Config)
_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}  # absl's spellings
# The flags that become `Config` fields when given (improve_nas.trainer.flags.CONFIG_FLAGS).
CONFIG_FLAGS = settings.config_flags(Config)


def parse_train_flags(argv: Iterable[str], *, origin: str = "train flags", table: type = Config) -> dict[str, str]:
    """Parses trainer flags given as `--name=value` or `--name value` (absl syntax).

    Args:
      argv: the flags, e.g. `["--preset=smoke", "--dataset", "fake"]`.
      origin: where they come from, for error messages (`train flags`, or the spec's `...args` field).
      table: the settings table the flags come from.

    Returns:
      Flag name -> value as written, in first-seen order; a repeated flag keeps its last value, as absl does.

    Raises:
      UsageError: a positional argument, an unknown flag, a missing value, or a non-integer for an integer flag.
    """
    types = settings.flag_types(table)
    tokens = list(argv)
    flags: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("-") or token in ("-", "--"):
            raise UsageError(f"{origin}: unexpected argument {token!r}; train flags look like --name=value")
        name, separator, value = token.lstrip("-").partition("=")
        if not separator and types.get(name) is bool:  # absl's --flag / --noflag
            separator, value = "=", "true"
        elif not separator and name.startswith("no") and types.get(name[2:]) is bool:
            name, separator, value = name[2:], "=", "false"
        if name not in types:
            raise UsageError(f"{origin}: unknown train flag --{name}; valid flags: {', '.join(sorted(types))}")
        if not separator:
            if index == len(tokens):
                raise UsageError(f"{origin}: flag --{name} needs a value")
            value = tokens[index]
            index += 1
        _typed(name, value, origin, types)
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

    typed = {name: _typed(name, value, "train flags", TRAIN_FLAGS) for name, value in flags.items()}
    explicit: dict[str, Any] = settings.explicit_settings(typed, Config)
    config = resolve_config(preset=typed.get("preset"), flags=dict(explicit, model_dir=model_dir),
                            hparams=typed.get("hparams", ""), data_params=typed.get("data_params", ""))
    if not config.dataset:
        raise UsageError("flag --dataset is required (or a --preset that sets it)")
    if not config.dataset.startswith("npz:"):  # an npz path names a file on the training machine, not this one
        from improve_nas.data import validate_dataset_spec  # deferred: imports Keras

        validate_dataset_spec(config.dataset)
    return config


def _typed(name: str, value: str, origin: str, types: Mapping[str, type]) -> Any:
    if types[name] is bool:
        if value.lower() not in _BOOLEANS:
            raise UsageError(f"{origin}: flag --{name}={value!r} is not true or false")
        return _BOOLEANS[value.lower()]
    if types[name] is int:
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{origin}: flag --{name}={value!r} is not an integer") from None
    return value
