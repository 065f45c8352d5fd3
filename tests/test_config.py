"""Configuration: legacy --hparams / --data_params parsing, validation, presets, JSON round trip."""

import dataclasses

import pytest

from improve_nas.config import Config, DataParams, HParams, parse_overrides
from improve_nas.errors import UsageError
from improve_nas.presets import PRESETS, resolve_config

# The --hparams string of the original README's reproduction command (docs/original_code.md §8.2), verbatim.
README_HPARAMS = (
    "adanet_beta=0.0,adanet_lambda=0.0,boosting_iterations=10,force_grow=True,knowledge_distillation=none,"
    "generator=simple,learn_mixture_weights=False,initial_learning_rate=0.025,learning_rate_schedule=cosine,"
    "aux_head_weight=0.4,clip_gradients=5,data_format=NHWC,dense_dropout_keep_prob=1.0,drop_path_keep_prob=0.6,"
    "filter_scaling_rate=2.0,label_smoothing=0.1,model_version=cifar,num_cells=6,num_conv_filters=32,"
    "num_reduction_layers=2,optimizer=momentum,skip_reduction_layer_input=0,stem_multiplier=3.0,use_aux_head=False,"
    "weight_decay=0.0005")

# Every hparam of docs/original_code.md §2.1 (batch_size aside: it mirrors --batch_size) with its default and a non-default
# value written as a legacy string.
ORIGINAL_HPARAMS = {
    "num_cells": (3, "18", 18), "num_conv_filters": (10, "32", 32), "aux_head_weight": (0.4, "0.5", 0.5),
    "stem_multiplier": (3.0, "2", 2.0), "drop_path_keep_prob": (0.6, "0.7", 0.7), "use_aux_head": (True, "0", False),
    "dense_dropout_keep_prob": (1.0, "0.5", 0.5), "filter_scaling_rate": (2.0, "1.5", 1.5),
    "num_reduction_layers": (2, "1", 1), "data_format": ("NHWC", "NCHW", "NCHW"),
    "skip_reduction_layer_input": (0, "1", 1), "use_bounded_activation": (False, "true", True),
    "clip_gradients": (5, "3", 3), "optimizer": ("momentum", "adam", "adam"),
    "learning_rate_schedule": ("cosine", "constant", "constant"), "initial_learning_rate": (0.025, "0.1", 0.1),
    "weight_decay": (5e-4, "1e-4", 1e-4), "label_smoothing": (0.1, "0.0", 0.0),
    "knowledge_distillation": ("adaptive", "born_again", "born_again"), "model_version": ("cifar", "v2", "v2"),
    "adanet_lambda": (0.0, "0.01", 0.01), "adanet_beta": (0.0, "0.02", 0.02), "generator": ("simple", "dynamic",
                                                                                             "dynamic"),
    "boosting_iterations": (3, "10", 10), "force_grow": (True, "False", False),
    "evaluator_batch_size": (-1, "128", 128), "evaluator_steps": (-1, "5", 5),
    "learn_mixture_weights": (False, "True", True), "mixture_weight_type": ("scalar", "vector", "vector"),
    "use_evaluator": (True, "false", False),
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_HPARAMS))
def test_every_original_hparam_has_its_default_and_parses(name):
    default, text, parsed = ORIGINAL_HPARAMS[name]
    assert getattr(HParams(), name) == default
    assert type(getattr(HParams(), name)) is type(default)
    overrides = parse_overrides(f"{name}={text}", HParams, what="hparam")
    assert overrides == {name: parsed}
    assert getattr(HParams(**overrides), name) == parsed


def test_original_readme_command_is_accepted():
    config = resolve_config(
        flags=dict(batch_size=1, dataset="cifar10", train_steps=10_000_000, save_summary_steps=10_000,
                   save_checkpoints_secs=600, model_dir="/tmp/x"),
        hparams=README_HPARAMS, data_params="augmentation=basic,cutout=True")
    assert config.hparams.num_cells == 6 and config.hparams.num_conv_filters == 32
    assert config.hparams.use_aux_head is False and config.hparams.knowledge_distillation == "none"
    assert config.iteration_steps == 1_000_000
    assert config.data_params == DataParams(augmentation="basic", cutout=True)


@pytest.mark.parametrize("text,kind,expected", [
    ("True", bool, True), ("false", bool, False), ("1", bool, True), ("0", bool, False), ("2", bool, True)])
def test_bools_parse_like_the_original(text, kind, expected):
    assert parse_overrides(f"use_aux_head={text}", HParams, what="hparam")["use_aux_head"] is expected


@pytest.mark.parametrize("text,fragment", [
    ("clip_gradients=2.5", "clip_gradients='2.5'"),            # int default: a float is refused, as in the original
    ("num_cells=six", "num_cells='six'"),
    ("use_aux_head=maybe", "true, false, 1 or 0"),
    ("no_such_hparam=1", "unknown hparam 'no_such_hparam'"),
    ("num_cells=3,num_cells=6", "given twice"),
    ("num_cells", "malformed hparam"),
    ("num_cells=4", "multiple of 3"),
    ("optimizer=adamw", "choose one of: adagrad, adam, lazy_adam, momentum, rmsprop, sgd"),
    ("generator=randum", "choose one of: simple, dynamic, random, evolution, controller"),
    ("generator=evolution,candidates_per_iteration=1", "ranks the candidates of an iteration against each other"),
    ("search_space=nasnt", "choose one of: nasnet, amoeba, darts"),
    ("candidates_per_iteration=0", "candidates_per_iteration=0 must be positive"),
    ("tournament=6,population=5", "tournament=6 is larger than population=5; valid: 1..5"),
    ("genotype=nasnet", "did you mean nasnet_a?"),
    ("parents=best", "choose one of: tournament, ensemble"),
    ("knowledge_distillation=teacher", "choose one of: adaptive, born_again, none"),
    ("mixture_weight_type=tensor", "choose one of: scalar, vector, matrix"),
    ("data_format=NCWH", "choose one of: NHWC, NCHW"),
    ("drop_path_keep_prob=1.5", "probability"),
    ("boosting_iterations=0", "must be positive"),
    ("evaluator_steps=0", "-1 for the default"),
])
def test_bad_hparams_name_the_problem(text, fragment):
    with pytest.raises(UsageError) as error:
        resolve_config(flags=dict(dataset="fake"), hparams=text)
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_unknown_hparam_lists_valid_names():
    with pytest.raises(UsageError, match="valid names: .*num_cells"):
        parse_overrides("nmu_cells=3", HParams, what="hparam")


@pytest.mark.parametrize("text,fragment", [
    ("augmentation=inception", "choose one of: basic, none"), ("cutout=sometimes", "true, false"),
    ("shuffle=1", "unknown data_param 'shuffle'"), ("pad=-1", "must be >= 0")])
def test_bad_data_params(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve_config(flags=dict(dataset="fake"), data_params=text)


@pytest.mark.parametrize("flags,fragment", [
    (dict(save_checkpoints_secs=0, save_checkpoints_steps=0), "exactly one of"),
    (dict(save_checkpoints_secs=60, save_checkpoints_steps=10), "exactly one of"),
    (dict(batch_size=0), "batch_size=0 must be positive"),
    (dict(train_steps=2), "at least boosting_iterations=3"),
    (dict(eval_steps=0), "eval_steps=0"),
])
def test_cross_field_rules(flags, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve_config(flags=dict(dataset="fake", **flags))


def test_json_round_trip_and_frozen():
    config = resolve_config(preset="paper_cifar10", flags=dict(model_dir="/tmp/run"), hparams="num_cells=12")
    assert Config.from_json(config.to_json()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 4  # type: ignore[misc]


def test_unknown_json_key_is_refused():
    with pytest.raises(UsageError, match="unknown config key 'learning_rate'"):
        Config.from_dict({"learning_rate": 0.1})


def test_hparam_batch_size_mirrors_the_flag():
    config = resolve_config(flags=dict(dataset="fake", batch_size=7))
    assert config.hparams.batch_size == 7
    assert config.hparams.resolved_evaluator_batch_size == 7
    assert config.hparams.resolved_evaluator_steps is None


def test_leftover_steps_are_dropped_not_given_to_an_extra_member():
    config = resolve_config(flags=dict(dataset="fake", train_steps=1_000_000))
    assert config.iteration_steps == 333_333


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_documents_itself(name):
    config = resolve_config(preset=name, flags=dict(model_dir="/tmp/run"))
    assert config.preset == name and config.dataset
    doc = PRESETS[name].doc
    assert "Command:" in doc and "Hardware:" in doc and "Expected:" in doc


def test_paper_presets_are_the_papers_effective_settings():
    for name, distillation, learned in (("paper_cifar10", "adaptive", True), ("paper_cifar100", "none", False)):
        hp = resolve_config(preset=name).hparams
        assert (hp.num_cells, hp.num_conv_filters, hp.boosting_iterations) == (18, 32, 10)
        assert hp.use_aux_head is False and hp.drop_path_keep_prob == 1.0
        assert (hp.label_smoothing, hp.initial_learning_rate, hp.clip_gradients, hp.weight_decay) == (
            0.1, 0.025, 5, 5e-4)
        assert hp.learning_rate_schedule == "cosine" and hp.mixture_weight_type == "scalar"
        assert hp.knowledge_distillation == distillation and hp.learn_mixture_weights is learned


def test_flags_override_the_preset_key_by_key():
    config = resolve_config(preset="quickstart", flags=dict(batch_size=8), hparams="num_conv_filters=4")
    assert config.batch_size == 8 and config.hparams.num_conv_filters == 4
    assert config.dataset == "digits" and config.hparams.boosting_iterations == 3  # kept from the preset


def test_unknown_preset():
    with pytest.raises(UsageError, match="unknown preset 'papr'; choose one of: smoke, quickstart"):
        resolve_config(preset="papr")


@pytest.mark.parametrize("hparams, together", [("", 1), ("generator=dynamic", 2),
                                               ("generator=random,candidates_per_iteration=4", 4),
                                               ("generator=controller,candidates_per_iteration=2", 2)])
def test_the_memory_check_sizes_for_the_candidates_an_iteration_trains_together(hparams, together):
    assert resolve_config(flags=dict(dataset="digits"), hparams=hparams).hparams.candidates_trained_together == together
