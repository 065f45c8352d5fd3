"""Data checks before training: nothing trains on blank images, one class, an oversized batch or beyond memory."""

import os
import subprocess
import sys

import numpy as np
import pytest

from improve_nas import run_checks
from improve_nas.errors import UsageError
from improve_nas.presets import resolve_config

DIGITS = (8, 8, 1)
CIFAR = (32, 32, 3)


def _config(data_params="", hparams="", **flags):
    return resolve_config(flags=dict(dict(dataset="fake", model_dir="/unused"), **flags), hparams=hparams,
                          data_params=data_params)


def test_cifar_defaults_fit_cifar_images():
    run_checks.check_augmentation_fits(_config(), CIFAR)  # cutout 16 and pad 4 of 32: the paper's


def test_default_cutout_on_8x8_images_is_refused_with_a_size_that_fits():
    with pytest.raises(UsageError, match=r"cutout_size=16 would blank .* 8×8 .*cutout_size=4 .*cutout=False"):
        run_checks.check_augmentation_fits(_config(), DIGITS)
    run_checks.check_augmentation_fits(_config("cutout_size=4"), DIGITS)
    run_checks.check_augmentation_fits(_config("cutout=False"), DIGITS)


def test_pad_larger_than_half_the_image_is_refused_unless_unused():
    with pytest.raises(UsageError, match=r"pad=5 .*pad=1 \(at most 4\)"):
        run_checks.check_augmentation_fits(_config("pad=5,cutout=False"), DIGITS)
    run_checks.check_augmentation_fits(_config("pad=5,cutout=False,augmentation=none"), DIGITS)
    run_checks.check_augmentation_fits(_config("pad=4,cutout=False"), DIGITS)


def test_one_class_is_refused():
    with pytest.raises(UsageError, match="only class 3"):
        run_checks.check_classes(np.full(10, 3, np.int32))
    run_checks.check_classes(np.array([0, 1], np.int32))


def test_batch_larger_than_the_training_partition_is_refused():
    with pytest.raises(UsageError, match=r"batch_size=100000 is larger than the training partition \(128 images\); "
                                         r"use --batch_size=128"):
        run_checks.check_batch_size(100_000, 128)
    run_checks.check_batch_size(128, 128)


def test_memory_estimate_is_a_lower_bound_and_refuses_beyond_what_is_available():
    config = _config(hparams="num_cells=3,num_conv_filters=8,num_reduction_layers=0", batch_size=64)
    # stem 8·8·24 + three normal cells of 6·8 channels, all at 8×8
    assert run_checks.activations_per_image(config, DIGITS) == 8 * 8 * 24 + 3 * 8 * 8 * 48
    per_image = run_checks.activations_per_image(config, DIGITS) * 4
    data_bytes = 1_000_000
    fits = data_bytes + 64 * per_image
    run_checks.check_memory(config, image_shape=DIGITS, data_bytes=data_bytes, num_candidates=1, available=fits)
    with pytest.raises(UsageError, match=r"needs at least .* GiB of memory .* use --batch_size=32 or less"):
        run_checks.check_memory(config, image_shape=DIGITS, data_bytes=data_bytes, num_candidates=1,
                                available=fits - 1)
    with pytest.raises(UsageError, match="the training data alone does not fit"):
        run_checks.check_memory(config, image_shape=DIGITS, data_bytes=data_bytes, num_candidates=1,
                                available=data_bytes)
    run_checks.check_memory(config, image_shape=DIGITS, data_bytes=10**15, num_candidates=1, available=None)


def test_available_memory_is_the_hosts_on_a_cpu():
    available = run_checks.available_memory_bytes()
    assert available is not None and 0 < available < 2**50


def _train(args, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "improve_nas.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)


def _error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[-1]


@pytest.mark.parametrize("case", ["issue_digits_command", "one_class", "batch_too_large"])
def test_cli_refuses_before_writing_anything(case, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    if case == "issue_digits_command":  # the red-team's command: default cutout on 8x8 digits
        hparams = "num_cells=3,num_conv_filters=8,use_aux_head=False,boosting_iterations=3,drop_path_keep_prob=1.0"
        args = ["--dataset=digits", f"--hparams={hparams}", "--batch_size=32", "--train_steps=120"]
        expected = "cutout_size=16 would blank"
    else:
        rng = np.random.default_rng(0)
        labels = np.zeros(16, np.int64) if case == "one_class" else np.arange(16) % 4
        np.savez(tmp_path / "data.npz", x_train=rng.integers(0, 256, (16, 16, 16), dtype=np.uint8), y_train=labels,
                 x_test=rng.integers(0, 256, (4, 16, 16), dtype=np.uint8), y_test=np.arange(4) % 2)
        args = [f"--dataset=npz:{tmp_path / 'data.npz'}", "--preset=smoke", "--data_params=cutout_size=8,pad=2"]
        if case == "batch_too_large":
            args.append("--batch_size=100000")
        expected = "only class 0" if case == "one_class" else "batch_size=100000 is larger than the training"
    result = _train([*args, f"--model_dir={model_dir}"], tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert expected in _error_line(result)
    assert list(model_dir.iterdir()) == []


def test_the_genotype_file_is_read_before_training_and_its_cells_size_the_estimate(tmp_path):
    missing = tmp_path / "cells.json"
    with pytest.raises(UsageError, match=f"cannot read the genotype file {missing}") as error:
        run_checks.check_genotype(_config(hparams=f"genotype={missing}"))
    assert "\n" not in str(error.value)
    missing.write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match=f"genotype file {missing}: genotype is not valid JSON"):
        run_checks.check_run(_config(hparams=f"genotype={missing}"), image_shape=DIGITS, x_train=np.zeros((4, 8, 8, 1)),
                             y_train=np.array([0, 1, 0, 1]), num_candidates=1)
    # DARTS-V2 concatenates 4 states in its normal cells where NASNet-A concatenates 6
    config = _config(hparams="num_cells=3,num_conv_filters=8,num_reduction_layers=0,genotype=darts_v2")
    assert run_checks.activations_per_image(config, DIGITS) == 8 * 8 * 24 + 3 * 8 * 8 * 32
