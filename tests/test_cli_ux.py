"""The command line as a user meets it: help, version, quiet start-up, fast refusals, suggestions.

Most checks run the installed `improve-nas` console script (what a user types), some `python -m`; every one but
the end-to-end run at the bottom finishes in about a second because TensorFlow is never imported.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import improve_nas
from improve_nas.config import DataParams, HParams, parse_overrides
from improve_nas.errors import UsageError, nearest
from improve_nas.presets import resolve_config
from improve_nas.quiet import keep_line

CONSOLE_SCRIPT = shutil.which("improve-nas")
TRAINER = [sys.executable, "-m", "improve_nas.trainer.trainer"]
TRAIN_FLAGS = ("--model_dir", "--hparams", "--data_params", "--dataset", "--preset", "--batch_size",
               "--train_steps", "--job-dir", "--distribution", "--precision", "--force_unlock")
FRAMEWORKS = ("tensorflow", "jax", "keras")
# What TensorFlow's C++ runtime prints at start-up when nobody silences it.
START_UP_NOISE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|absl::InitializeLog|oneDNN|cuInit",
                            re.MULTILINE)


def console(*args, env=None):
    if CONSOLE_SCRIPT is None:
        pytest.skip("the improve-nas console script is not installed (pip install -e .)")
    return run([CONSOLE_SCRIPT, *args], env=env)


def run(command, env=None):
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2") if env is None else env)


def env_without_log_level():
    return {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_train_help_lists_the_train_flags(flag):
    for result in (console("train", flag), run(TRAINER + [flag])):
        assert result.returncode == 0, result.stderr
        for name in TRAIN_FLAGS:
            assert f"{name}:" in result.stdout.replace("--[no]", "--"), name
        assert result.stdout.startswith("usage: ")
    assert "usage: improve-nas train " in console("train", flag).stdout


def test_top_level_help_points_to_command_help_and_version():
    result = console("--help")
    assert result.returncode == 0 and "--version" in result.stdout and "COMMAND --help" in result.stdout


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    start = time.monotonic()
    result = console(flag)
    assert time.monotonic() - start < 10
    assert (result.returncode, result.stdout, result.stderr) == (0, f"improve_nas {improve_nas.__version__}\n", "")


def test_version_imports_no_framework():
    assert _in_process(["--version"]) == (0, [])


def write_npz(path, num_train=6):
    np.savez(path, x_train=np.zeros((num_train, 32, 32, 3), np.uint8), y_train=np.arange(num_train) % 3,
             x_test=np.zeros((4, 32, 32, 3), np.uint8), y_test=np.arange(4) % 3)
    return str(path)


def bad_inputs(tmp_path):
    """Bad command lines of `train`, each with a fragment of its one-line error."""
    model_dir = f"--model_dir={tmp_path / 'run'}"
    small = write_npz(tmp_path / "small.npz")
    return {
        "unknown dataset": (["--dataset=cifar11", model_dir], "did you mean cifar10 or cifar100?"),
        "bad bucket": (["--model_dir=gs://Bad_Bucket/x", "--preset=smoke"], "invalid bucket 'Bad_Bucket'"),
        "bad bucket, multi_worker": (["--model_dir=gs://Bad_Bucket/x", "--preset=smoke", "--distribution=multi_worker"],
                                     "invalid bucket 'Bad_Bucket'"),
        "unknown preset": (["--preset=smok", model_dir], "did you mean smoke?"),
        "unknown hparam": (["--preset=smoke", "--hparams=num_cell=6", model_dir], "did you mean num_cells?"),
        "bad flag value": (["--preset=smoke", "--batch_size=many", model_dir], "batch_size"),
        "missing npz": (["--preset=smoke", f"--dataset=npz:{tmp_path / 'none.npz'}", model_dir], "not found"),
        "batch larger than the data": (["--preset=smoke", f"--dataset=npz:{small}", "--batch_size=16", model_dir],
                                       "batch_size=16 is larger than the training partition (6 images)"),
        "missing genotype file": (["--preset=smoke", f"--hparams=genotype={tmp_path / 'cells.json'}", model_dir],
                                  f"cannot read the genotype file {tmp_path / 'cells.json'}"),
    }


def test_bad_input_is_refused_in_seconds_in_one_line(tmp_path):
    for case, (flags, fragment) in bad_inputs(tmp_path).items():
        start = time.monotonic()
        result = console("train", *flags, env=env_without_log_level())
        elapsed = time.monotonic() - start
        assert result.returncode == 2, (case, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), (case, result.stderr)
        assert fragment in result.stderr, (case, result.stderr)
        assert elapsed < 10, (case, elapsed)  # about half a second on an idle machine
        assert not (tmp_path / "run").exists(), case


def test_bad_input_is_refused_before_any_framework_is_imported(tmp_path):
    for case, (flags, fragment) in bad_inputs(tmp_path).items():
        assert _in_process(["train", *flags]) == (2, []), case


def _in_process(args):
    """(exit code, frameworks imported) of `improve-nas ARGS` in a fresh interpreter."""
    code = textwrap.dedent(f"""
        import sys
        from improve_nas.cli import main
        try:
            code = main({args!r})
        except SystemExit as exit:
            code = exit.code
        print(code, [name for name in {FRAMEWORKS!r} if name in sys.modules])
    """)
    result = run([sys.executable, "-c", code])
    code, imported = result.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(code), eval(imported)


def test_submit_without_separator_says_train_flags_go_after_it():
    result = console("submit", "--config=config.yaml", "--region=us-central1", "--staging_bucket=gs://b",
                     "--preset=smoke")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--preset=smoke" in result.stderr and "go after --" in result.stderr


def test_unknown_flag_suggests_the_nearest():
    result = console("train", "--modeldir=/tmp/x")
    assert result.returncode == 2 and "Did you mean: model_dir" in result.stderr


@pytest.mark.parametrize("call, fragment", [
    (lambda: parse_overrides("num_cell=6", HParams, what="hparam"), "unknown hparam 'num_cell'; did you mean "
     "num_cells? valid names: adanet_beta"),
    (lambda: parse_overrides("cutuot=true", DataParams, what="data_param"), "did you mean cutout?"),
    (lambda: resolve_config(preset="paper"), "unknown preset 'paper'; did you mean paper_cifar10 or paper_cifar100? "
     "choose one of: smoke"),
    (lambda: resolve_config(flags=dict(dataset="fake"), hparams="dropout=0.5"), "did you mean "
     "dense_dropout_keep_prob?"),
])
def test_unknown_names_suggest_the_nearest(call, fragment):
    with pytest.raises(UsageError) as error:
        call()
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_nearest_says_nothing_when_nothing_is_near():
    assert nearest("zzz", ["num_cells", "optimizer"]) == ""


def test_start_up_lines_are_recognised():
    assert not keep_line("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", 3)
    assert not keep_line("I0000 00:00:1796184885.327512     909 port.cc:153] oneDNN custom operations are on.", 3)
    assert not keep_line("E0000 00:00:1796184673.446724   26470 cuda_platform.cc:52] failed call to cuInit", 3)
    assert keep_line("E0000 00:00:1796184673.446724   26470 cuda_platform.cc:52] failed call to cuInit", 2)
    assert keep_line("F0000 00:00:1796184673.446724   26470 x.cc:1] check failed", 3)
    assert keep_line("Traceback (most recent call last):", 3)


QUIET_IMPORT = textwrap.dedent("""
    import os, sys
    from improve_nas.quiet import quiet_tensorflow_start_up
    quiet_tensorflow_start_up()
    import improve_nas.quiet as quiet
    with quiet._stderr_filtered(3):  # what C++ and Python write to stderr while TensorFlow is imported
        os.write(2, b"I0000 00:00:1796184885.327512     909 port.cc:153] oneDNN custom operations are on.\\n")
        print("a Python warning stays", file=sys.stderr)
    print(os.environ["TF_CPP_MIN_LOG_LEVEL"], any(isinstance(f, quiet._QuietImport) for f in sys.meta_path))
""")


def test_start_up_lines_are_dropped_unless_the_user_set_the_level():
    result = run([sys.executable, "-c", QUIET_IMPORT], env=env_without_log_level())
    assert result.stdout == "3 True\n" and result.stderr == "a Python warning stays\n", result
    result = run([sys.executable, "-c", QUIET_IMPORT], env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"))
    assert result.stdout == "0 False\n", result  # the user's level, and TensorFlow's import left alone


def test_python_info_logs_only_with_verbosity():
    code = textwrap.dedent("""
        import sys
        from absl import logging
        from improve_nas.trainer import trainer
        trainer.main = lambda argv: logging.info("an INFO line") or logging.warning("a WARNING line") or 0
        trainer.run_main(["improve-nas train"] + sys.argv[1:])
    """)
    quiet = run([sys.executable, "-c", code])
    assert "a WARNING line" in quiet.stderr and "an INFO line" not in quiet.stderr, quiet.stderr
    verbose = run([sys.executable, "-c", code, "--verbosity=0"])
    assert "an INFO line" in verbose.stderr, verbose.stderr


def test_summary_prints_no_tensorflow_start_up_lines():
    result = console("summary", "--hparams=num_cells=3,num_conv_filters=8", env=env_without_log_level())
    assert result.returncode == 0, result.stderr
    assert not START_UP_NOISE.search(result.stderr), result.stderr


@pytest.mark.slow
def test_a_training_run_prints_no_start_up_or_info_lines(finished_smoke_run):
    if CONSOLE_SCRIPT is None:
        pytest.skip("the improve-nas console script is not installed (pip install -e .)")
    _, result = finished_smoke_run  # `improve-nas train --preset=smoke ...` without TF_CPP_MIN_LOG_LEVEL (smoke_run.py)
    assert result.args[0] == CONSOLE_SCRIPT
    assert result.returncode == 0, result.stderr
    assert not START_UP_NOISE.search(result.stderr), result.stderr
    assert "Assets written to" not in result.stderr + result.stdout
