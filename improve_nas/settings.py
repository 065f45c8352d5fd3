"""Everything generated from the settings table (`improve_nas.config.Config`): the trainer's flags, `submit`'s flag
check, the bench flags and the resume rule.

Every function takes the table as an argument (default `Config`): a table is a dataclass whose fields are all
declared with `config.setting`, so a derived table with one more setting reaches every view at once. Imports neither
absl nor Keras: `submit` checks flags with it on a machine that only submits.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any, Mapping

from improve_nas.config import FIELD_DEFAULT, Config


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag of `improve-nas train`."""

    name: str
    type: type  # int, str or bool (absl's integer, string and boolean flags)
    default: Any
    help_template: str  # `{choices}` stands for the choice list
    field: str | None = None  # the setting it sets; None for a flag of one invocation
    from_flag: bool = False  # whether its value, when given, becomes the setting as is
    unset: int | None = None  # the value that means None
    bench: bool = False  # whether `improve-nas bench` takes it too
    choices: tuple = ()
    owner: str | None = None  # `module:NAME` of the owner's choice list

    @property
    def help(self) -> str:
        """The help text; resolving an owner's list imports its module, so only when the text is needed."""
        if "{choices}" not in self.help_template:
            return self.help_template
        names = self.choices or owner_choices(self.owner)
        return self.help_template.replace("{choices}", ", ".join(str(name) for name in names))


# Flags of one invocation, not settings of the run: never stored in config.json, never compared on resume.
INVOCATION_FLAGS = (
    Flag("job-dir", str, "", "Default model_dir (Vertex AI / Cloud ML Engine pass it)."),
    Flag("force_unlock", bool, False, "Take model_dir's lock even though another process holds it (one whose host is "
         "gone, or a gs:// lock left by a killed job on another host). Not part of the run's configuration."),
)


def setting_fields(table: type = Config) -> tuple[dataclasses.Field, ...]:
    """The table's fields; each must be declared with `config.setting` (so it has help and a resume class)."""
    fields = dataclasses.fields(table)
    for field in fields:
        if "resumable" not in field.metadata:
            raise TypeError(f"{table.__name__}.{field.name} is not declared with improve_nas.config.setting(...)")
    return fields


def setting_flags(table: type = Config) -> list[Flag]:
    """One flag per setting, named, typed and documented by its declaration."""
    hints = typing.get_type_hints(table)
    flags = []
    for field in setting_fields(table):
        meta = field.metadata
        kind = _flag_type(hints[field.name], f"{table.__name__}.{field.name}")
        if meta["flag_default"] is not FIELD_DEFAULT:
            default = meta["flag_default"]
        elif dataclasses.is_dataclass(hints[field.name]):
            default = ""  # a group's flag is a `name=value,...` string of overrides
        else:
            default = _field_default(field)
        flags.append(Flag(meta["flag"] or field.name, kind, default, meta["help"], field=field.name,
                          from_flag=meta["from_flag"], unset=meta["unset"], bench=meta["bench"],
                          choices=meta["choices"], owner=meta["owner"]))
    return flags


def train_flags(table: type = Config) -> list[Flag]:
    """Every flag of `improve-nas train`: the settings', then the invocation's."""
    return setting_flags(table) + list(INVOCATION_FLAGS)


def flag_types(table: type = Config) -> dict[str, type]:
    """Flag name -> value type of every train flag (what `submit` checks the job's flags against)."""
    return {flag.name: flag.type for flag in train_flags(table)}


def config_flags(table: type = Config) -> tuple[str, ...]:
    """The flags whose values become settings as they are, when given on the command line."""
    return tuple(flag.name for flag in setting_flags(table) if flag.from_flag)


def explicit_settings(given: Mapping[str, Any], table: type = Config) -> dict[str, Any]:
    """Setting name -> value of the flags in `given` (flag name -> typed value) that set a setting as they are.

    Only the flags given on the command line belong in `given`, so a preset's values survive the others' defaults.
    """
    values = {}
    for flag in setting_flags(table):
        if flag.from_flag and flag.name in given:
            value = given[flag.name]
            values[flag.field] = None if flag.unset is not None and value == flag.unset else value
    return values


def bench_flags(table: type = Config) -> list[Flag]:
    """The train flags `improve-nas bench` takes too."""
    return [flag for flag in setting_flags(table) if flag.bench]


def resumable(name: str, table: type = Config) -> bool:
    """Whether setting `name` may change between a run and its resumption (it does not change what is trained)."""
    return {field.name: field.metadata["resumable"] for field in setting_fields(table)}[name]


def resume_conflicts(stored: Mapping[str, Any], new: Mapping[str, Any], table: type = Config) -> list[str]:
    """Names of the settings that differ between two `Config.to_dict()`s and may not change on resume.

    A group (hparams, data_params) is named by the members that differ; a key the table does not know counts as
    one that may not change.
    """
    may_change = {field.name for field in setting_fields(table) if field.metadata["resumable"]}
    names = set()
    for key in (set(stored) | set(new)) - may_change:
        old, value = stored.get(key), new.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            names |= {name for name in set(old) | set(value) if old.get(name) != value.get(name)}
        elif old != value:
            names.add(key)
    return sorted(names)


def owner_choices(owner: str) -> tuple:
    """The choice list `module:NAME` names (a tuple, or the keys of a registry dict or enum)."""
    module, _, name = owner.partition(":")
    return tuple(getattr(importlib.import_module(module), name))


def _flag_type(hint: Any, where: str) -> type:
    if dataclasses.is_dataclass(hint):
        return str
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    kind = arguments[0] if len(arguments) == 1 else hint  # `int | None` -> int
    if kind not in (int, str, bool):
        raise TypeError(f"{where}: a setting must be an int, str or bool (or None), or a group; got {hint!r}")
    return kind


def _field_default(field: dataclasses.Field) -> Any:
    return None if field.default is dataclasses.MISSING else field.default
