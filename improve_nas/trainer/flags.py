"""The command-line flags of `improve-nas train` and `python -m improve_nas.trainer.trainer`.

Generated from the settings table (`improve_nas.config.Config`, through `improve_nas.settings`): every flag of the
2019 trainer keeps its name, type, default and meaning (docs/original_code.md §1.1); the rest are this project's.
Defined once here so both entry points share them.
"""

from __future__ import annotations

from absl import flags

from improve_nas import settings
from improve_nas.config import Config

_DEFINE = {int: flags.DEFINE_integer, str: flags.DEFINE_string, bool: flags.DEFINE_boolean}


def define_flags(table: type = Config, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines every train flag of `table` (its settings' and the invocation's) in `flag_values`."""
    for flag in settings.train_flags(table):
        _DEFINE[flag.type](flag.name, flag.default, flag.help, flag_values=flag_values)


def explicit_config_flags(flag_values: flags.FlagValues = flags.FLAGS, table: type = Config) -> dict:
    """The run-level flags given on the command line (so a preset's values survive the others' defaults)."""
    given = {flag.name: flag_values[flag.name].value for flag in settings.setting_flags(table)
             if flag.name in flag_values and flag_values[flag.name].present}
    return settings.explicit_settings(given, table)


define_flags()
FLAGS = flags.FLAGS
# Flags whose values become `Config` fields when given explicitly; the others are handled by the entry point.
CONFIG_FLAGS = settings.config_flags(Config)
