"""Ctrl-C, I/O failures and a bad model_dir end in one line and a documented exit code; the rerun resumes.

The end-to-end cases run the `smoke` preset in a subprocess: Ctrl-C mid-training (exit 130), a file-size limit that
makes the export fail as a full disk would (exit 74, no staging left-overs), and SIGTERM during candidate selection
(report.json still lists the iteration that was published).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import pytest

from improve_nas.errors import io_error_line
from improve_nas.storage import fileio

SMOKE = ["--preset=smoke", "--dataset=fake", "--tf_random_seed=7"]


def _command(model_dir):
    return [sys.executable, "-m", "improve_nas.cli", "train", *SMOKE, f"--model_dir={model_dir}"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def _run(model_dir, **kwargs):
    return subprocess.run(_command(model_dir), capture_output=True, text=True, env=_env(), timeout=900, **kwargs)


def _last_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.strip()][-1]


def _leftovers(root) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files
            if n.startswith(fileio.LEFTOVER_PREFIXES)]


def test_io_error_line_finds_the_os_error_in_a_chain_or_a_message():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/run/iterations/.staging-1/m.keras")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert io_error_line(outer) == "cannot write /run/iterations/.staging-1/m.keras: No space left on device"
    tf_like = Exception("ResourceExhaustedError: /run/export/x; No space left on device\nmore lines")
    assert io_error_line(tf_like) == "I/O error: ResourceExhaustedError: /run/export/x; No space left on device"
    assert io_error_line(ValueError("shapes do not match")) is None
    assert io_error_line(OSError(errno.ENOENT, "No such file or directory")) is None  # a bug, not the disk


def test_files_are_written_with_the_umask_like_any_other(tmp_path):
    fileio.write_json(str(tmp_path / "a.json"), {})  # through a mkstemp temporary, which is created 0600
    with open(tmp_path / "b.txt", "w") as plain:
        plain.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) and mode & 0o044


def test_remove_leftovers_takes_staging_and_temporary_files_only(tmp_path):
    (tmp_path / "iterations" / ".staging-1" / "members").mkdir(parents=True)
    (tmp_path / "iterations" / "0").mkdir()
    (tmp_path / "iterations" / "0" / "architecture.json").write_text("{}")
    (tmp_path / ".tmp-abc.json").write_text("")
    removed = fileio.remove_leftovers(str(tmp_path))
    assert len(removed) == 2 and _leftovers(tmp_path) == []
    assert (tmp_path / "iterations" / "0" / "architecture.json").exists()


def test_model_dir_naming_a_file_is_one_line_exit_2(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    started = time.monotonic()
    result = _run(target)
    assert result.returncode == 2
    assert "is a file, not a directory" in _last_error_line(result.stderr) and str(target) in result.stderr
    assert time.monotonic() - started < 60  # refused before TensorFlow is imported... or at least before training
    assert target.read_text() == "not a directory"


@pytest.mark.slow
def test_ctrl_c_saves_state_exits_130_in_one_line_and_the_rerun_finishes(tmp_path):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(_command(model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env())
    deadline = time.monotonic() + 600
    while not list((model_dir / "checkpoints" / "0").glob("ckpt-*.npz")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 130, out[-2000:] + err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted (Ctrl-C): state saved; re-run the same command to resume" in out

    rerun = _run(model_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads((model_dir / "report.json").read_text())
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1]


@pytest.mark.slow
def test_a_write_failure_in_the_export_is_one_line_exit_74_and_the_rerun_exports(tmp_path):
    """RLIMIT_FSIZE makes every write past 500 kB fail with EFBIG, as a full disk fails with ENOSPC: the members
    (~370 kB) are saved, the exported ensemble (~760 kB) is not."""
    model_dir = tmp_path / "run"

    def limit_file_size():  # Python ignores SIGXFSZ, so the write fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))

    result = _run(model_dir, preexec_fn=limit_file_size)
    assert result.returncode == 74, result.stdout[-2000:] + result.stderr[-3000:]
    line = _last_error_line(result.stderr)
    assert line.startswith("error: ") and "File too large" in line and "re-run the same command" in line
    assert _leftovers(model_dir) == []
    assert not (model_dir / "export").exists()
    assert len(json.loads((model_dir / "report.json").read_text())["iterations"]) == 2

    rerun = _run(model_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already finished" in rerun.stdout and (model_dir / "export" / "ensemble.keras").exists()


@pytest.mark.slow
def test_sigterm_during_selection_leaves_a_report_of_what_was_published(tmp_path, monkeypatch):
    from improve_nas import preemption, run
    from improve_nas.adanet.runtime import engine
    from improve_nas.presets import resolve_config

    select = engine.select_candidate

    def select_then_signal(**kwargs):  # the signal arrives while the candidates are being scored
        signal.raise_signal(signal.SIGTERM)
        return select(**kwargs)

    monkeypatch.setattr(engine, "select_candidate", select_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    config = resolve_config(preset="smoke", flags=dict(model_dir=str(tmp_path / "run"), tf_random_seed=7))
    try:
        with pytest.raises(preemption.Preempted):
            run.train(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [entry["iteration"] for entry in report["iterations"]] == [0]
    assert report["final"]["members"] == 1
