"""The settings table (`Config`'s field metadata) reaches every place a run setting is used.

Walks the table: every setting is a flag of `improve-nas train --helpfull`, accepted by `submit`'s flag check and
classified by the resume rule; every choice list equals the one its owner builds from. A made-up setting declared
once in a test-local copy of the table reaches the trainer flags, `submit`, the bench flags and the resume rule.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from improve_nas import settings
from improve_nas.cloud import train_flags
from improve_nas.config import Config, DataParams, HParams, setting
from improve_nas.errors import UsageError
from improve_nas.trainer import flags as trainer_flags

# The settings a run may resume with changed, as `run.RESUMABLE_CHANGES` listed them before the table existed.
RESUMABLE = {"model_dir", "data_dir", "preset", "save_summary_steps", "save_checkpoints_secs", "save_checkpoints_steps",
             "keep_checkpoint_max", "eval_steps", "tf_random_seed", "distribution", "inference_batch_size"}
SAMPLE_VALUES = {int: "3", str: "x", bool: "true"}


def test_every_setting_and_invocation_flag_is_listed_by_improve_nas_train_helpfull():
    command = [shutil.which("improve-nas")] if shutil.which("improve-nas") else [sys.executable, "-m", "improve_nas.cli"]
    result = subprocess.run(command + ["train", "--helpfull"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl's --helpfull exits 1
    names = [flag.name for flag in settings.train_flags()]
    assert len(names) == len(dataclasses.fields(Config)) + 2  # + --job-dir, --force_unlock
    for flag in settings.train_flags():
        assert f"--{'[no]' if flag.type is bool else ''}{flag.name}:" in result.stdout, flag.name
    assert "force_unlock" not in {field.name for field in dataclasses.fields(Config)}  # not stored in config.json


def test_the_flags_keep_the_2019_names_and_defaults():
    defined = {flag.name: flag for flag in flags.FLAGS.flags_by_module_dict()[trainer_flags.__name__]}
    original = {"batch_size": 32, "train_steps": 1_000_000, "save_summary_steps": 2000, "hparams": "", "dataset": "",
                "tf_random_seed": None, "eval_steps": None, "save_checkpoints_secs": 600, "save_checkpoints_steps": 0,
                "data_params": "", "keep_checkpoint_max": 5, "job-dir": "", "model_dir": None}
    assert {name: defined[name].default for name in original} == original
    assert {name: defined[name].default for name in ("preset", "data_dir", "distribution", "precision",
                                                      "inference_batch_size", "force_unlock")} == {
        "preset": None, "data_dir": None, "distribution": "none", "precision": "float32",
        "inference_batch_size": None, "force_unlock": False}


def test_every_train_flag_is_accepted_by_submits_check():
    argv = [f"--{flag.name}={SAMPLE_VALUES[flag.type]}" for flag in settings.train_flags()]
    parsed = train_flags.parse_train_flags(argv)
    assert set(parsed) == {flag.name for flag in settings.train_flags()}
    explicit = settings.explicit_settings({"tf_random_seed": -1, "batch_size": 8, "hparams": "num_cells=6"})
    assert explicit == {"tf_random_seed": None, "batch_size": 8}  # -1 means unset; a group is not copied as is


def test_every_setting_is_classified_by_the_resume_rule():
    for field in dataclasses.fields(Config):
        assert settings.resumable(field.name) is (field.name in RESUMABLE), field.name
        conflicts = settings.resume_conflicts({field.name: 1}, {field.name: 2})
        assert conflicts == ([] if field.name in RESUMABLE else [field.name]), field.name
    # A group is named by the members that differ.
    stored, new = Config().to_dict(), Config(hparams=HParams(num_cells=6)).to_dict()
    assert settings.resume_conflicts(stored, new) == ["num_cells"]


def test_a_field_declared_without_setting_is_refused():
    table = dataclasses.make_dataclass("Table", [("plain", int, dataclasses.field(default=1))], bases=(Config,),
                                       frozen=True)
    with pytest.raises(TypeError, match="Table.plain is not declared with improve_nas.config.setting"):
        settings.train_flags(table)


def _choice_fields():
    for group in (Config, HParams, DataParams):
        for field in dataclasses.fields(group):
            if field.metadata.get("owner"):
                yield field


@pytest.mark.parametrize("field", list(_choice_fields()), ids=lambda field: field.name)
def test_every_choice_list_equals_its_owners(field):
    owned = settings.owner_choices(field.metadata["owner"])
    assert owned, field.metadata["owner"]
    if field.metadata.get("choices"):
        assert len(owned) == len(field.metadata["choices"]) and set(owned) == set(field.metadata["choices"])


def test_every_closed_choice_list_names_its_owner():
    declared = {field.name for group in (Config, HParams, DataParams) for field in dataclasses.fields(group)
                if field.metadata.get("choices")}
    assert declared == {"distribution", "precision", "optimizer", "learning_rate_schedule", "knowledge_distillation",
                        "generator", "mixture_weight_type", "data_format", "selection", "augmentation", "search_space",
                        "parents"}
    assert declared <= {field.name for field in _choice_fields()}


def _table_with(name: str, **declaration):
    return dataclasses.make_dataclass("Table", [(name, int, setting(7, help="A made-up setting.", **declaration))],
                                      bases=(Config,), frozen=True)


def test_a_made_up_setting_reaches_the_flags_submit_bench_and_the_resume_rule():
    table = _table_with("made_up_width", resumable=False, bench=True)

    flag_values = flags.FlagValues()  # the trainer's flags, defined from the table
    trainer_flags.define_flags(table, flag_values)
    flag_values(["train", "--made_up_width=9", "--batch_size=4"])
    assert flag_values["made_up_width"].help == "A made-up setting." and flag_values["made_up_width"].default == 7
    assert trainer_flags.explicit_config_flags(flag_values, table) == {"made_up_width": 9, "batch_size": 4}
    assert table(**trainer_flags.explicit_config_flags(flag_values, table)).made_up_width == 9

    assert train_flags.parse_train_flags(["--made_up_width", "9"], table=table) == {"made_up_width": "9"}
    with pytest.raises(UsageError, match="--made_up_width='wide' is not an integer"):
        train_flags.parse_train_flags(["--made_up_width=wide"], table=table)
    with pytest.raises(UsageError, match="unknown train flag --made_up_width"):
        train_flags.parse_train_flags(["--made_up_width=9"])  # the real table has no such setting

    assert "made_up_width" in {flag.name for flag in settings.bench_flags(table)}

    assert settings.resume_conflicts({"made_up_width": 7}, {"made_up_width": 9}, table) == ["made_up_width"]
    resumable = _table_with("made_up_width", resumable=True)
    assert settings.resume_conflicts({"made_up_width": 7}, {"made_up_width": 9}, resumable) == []


def test_a_made_up_choice_setting_is_checked_and_listed_in_its_help():
    table = dataclasses.make_dataclass(
        "Table", [("made_up_mode", str, setting("a", help="Mode: {choices}.", resumable=True, choices=("a", "b")))],
        bases=(Config,), frozen=True)
    assert table(made_up_mode="b").made_up_mode == "b"
    with pytest.raises(UsageError, match=r"flag made_up_mode='c' is invalid; choose one of: a, b"):
        table(made_up_mode="c")
    (flag,) = [flag for flag in settings.train_flags(table) if flag.name == "made_up_mode"]
    assert (flag.type, flag.default, flag.help) == (str, "a", "Mode: a, b.")
