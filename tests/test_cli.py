"""The command line: every bad input is one line on stderr, exit code 2, and an untouched model_dir."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TRAINER = [sys.executable, "-m", "improve_nas.trainer.trainer"]
CLI = [sys.executable, "-m", "improve_nas.cli"]


def run(command, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def write_npz(path, **overrides):
    arrays = dict(x_train=np.zeros((6, 8, 8), np.uint8), y_train=np.arange(6) % 3,
                  x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 3)
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(path, **arrays)
    return str(path)


def error_line(result):
    """The one line the trainer printed on stderr (absl/TF log lines excluded)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


BAD_INPUTS = {
    "unknown dataset": (["--dataset=cifar11"], "cifar11"),
    "unknown hparam": (["--dataset=fake", "--hparams=num_cels=3"], "num_cels"),
    "bad hparam type": (["--dataset=fake", "--hparams=clip_gradients=2.5"], "clip_gradients"),
    "bad hparam value": (["--dataset=fake", "--hparams=optimizer=adamw"], "adamw"),
    "bad data_param": (["--dataset=fake", "--data_params=augmentation=inception"], "inception"),
    "invalid preset": (["--preset=paper"], "paper"),
    "bad flag value": (["--dataset=fake", "--batch_size=many"], "batch_size"),
    "unknown flag": (["--dataset=fake", "--learning_rate=3"], "learning_rate"),
    "both checkpoint periods": (["--dataset=fake", "--save_checkpoints_steps=5"], "save_checkpoints"),
    "bad precision": (["--dataset=fake", "--precision=half"], "precision='half' is invalid; choose one of: float32, "
                      "mixed_bfloat16, mixed_float16"),
    "bad inference batch size": (["--dataset=fake", "--inference_batch_size=0"], "inference_batch_size=0 must be "
                                 "positive"),
    "missing dataset": ([], "dataset"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path):
    flags, fragment = BAD_INPUTS[case]
    model_dir = tmp_path / "run"
    result = run(TRAINER + flags + [f"--model_dir={model_dir}"])
    assert result.returncode == 2, result.stderr
    assert fragment in error_line(result)
    assert not model_dir.exists()


NPZ_CASES = {
    "missing file": (None, "not found"),
    "garbled": ("garbled", "npz"),
    "missing key": (dict(y_test=None), "y_test"),
    "length mismatch": (dict(y_train=np.arange(5) % 3), "y_train"),
    "negative label": (dict(y_test=np.array([0, -1, 2, 1])), "non-negative"),
    "wrong rank": (dict(x_train=np.zeros((6, 8), np.uint8)), "expected [N, H, W] or [N, H, W, C]"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_is_one_line_exit_2_and_nothing_written(case, tmp_path):
    content, fragment = NPZ_CASES[case]
    path = tmp_path / "data.npz"
    if content == "garbled":
        path.write_bytes(b"this is not a zip archive")
    elif content is not None:
        write_npz(path, **content)
    model_dir = tmp_path / "run"
    model_dir.mkdir()  # an existing, empty model_dir must stay empty
    result = run(TRAINER + [f"--dataset=npz:{path}", f"--model_dir={model_dir}"])
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert fragment in line.lower() or fragment in line
    assert str(path) in line
    assert list(model_dir.iterdir()) == []


def test_help_lists_the_original_flags():
    result = run(TRAINER + ["--helpshort"])
    for flag in ("batch_size", "train_steps", "save_summary_steps", "hparams", "dataset", "tf_random_seed",
                 "eval_steps", "save_checkpoints_secs", "save_checkpoints_steps", "data_params",
                 "keep_checkpoint_max", "job-dir", "model_dir", "preset", "data_dir"):
        assert f"--{flag}" in result.stdout, flag


def test_console_script_unknown_subcommand():
    result = run(CLI + ["fit"])
    assert result.returncode == 2
    assert "choose one of: train, summary, report, arch, predict, bench, submit" in error_line(result)


def test_summary_json_for_nasnet_a_6_at_768():
    result = run(CLI + ["summary", "--hparams=num_cells=18,num_conv_filters=32,knowledge_distillation=none",
                        "--format=json"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "NasNet_A_6.0_768_cifar"
    assert summary["trainable_params"] == 3_346_538


def test_summary_describes_the_genotype_hparam():
    result = run(CLI + ["summary", "--hparams=genotype=darts_v2,knowledge_distillation=none", "--format=json"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["name"] == "DARTS_V2_1.0_240_cifar"
    assert summary["genotype_text"].startswith("normal: [sep3(1)+sep3(0)]")
    assert summary["stages"][-2]["output_shape"] == [8, 8, 4 * 40]  # 4 concatenated states of 4F, NASNet-A's 6


def test_summary_bad_image_shape():
    result = run(CLI + ["summary", "--image_shape=32,32"])
    assert result.returncode == 2
    assert "--image_shape" in error_line(result)
