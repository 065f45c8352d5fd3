"""SIGTERM stops a run cleanly at the current step, and the rerun continues with no step repeated or lost.

The guard and the engine are checked in process on tiny Dense subnetworks (both backends); the end-to-end check
sends SIGTERM to a `smoke` training subprocess whose model_dir is on a local GCS emulator, then resumes it from the
bucket alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import pytest
from toy_engine import SETTINGS, DenseGenerator, toy_data

from improve_nas import preemption
from improve_nas.adanet import RunDirectory, grow_ensemble
from improve_nas.adanet.runtime import checkpoints
from improve_nas.storage import gcs


class Signal(keras.callbacks.Callback):
    """Sends SIGTERM to this process at the end of batch `after` (counted from 1) of this `fit` sequence."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_train_batch_end(self, batch, logs=None):
        self.after -= 1
        if self.after == 0:
            signal.raise_signal(signal.SIGTERM)


class CountSteps(keras.callbacks.Callback):
    def __init__(self, counts, iteration):
        super().__init__()
        self.counts, self.iteration = counts, iteration

    def on_train_batch_end(self, batch, logs=None):
        self.counts[self.iteration] = self.counts.get(self.iteration, 0) + 1


def grow(path, *, guard=None, signal_at=None, counts=None):
    """Runs the toy engine; `signal_at=(iteration, batch)` sends SIGTERM there; `counts` collects steps trained."""
    def callbacks(model, iteration, start_step):
        found = [CountSteps(counts, iteration)] if counts is not None else []
        if signal_at and iteration == signal_at[0]:
            found.append(Signal(signal_at[1]))
        return found + ([guard.stop_callback()] if guard else [])

    return grow_ensemble(run_dir=RunDirectory(str(path)), settings=SETTINGS, generator=DenseGenerator(),
                         data=toy_data(), make_preprocessing=lambda seed: keras.layers.Identity(),
                         make_callbacks=callbacks,
                         on_write=lambda: guard and guard.raise_if_requested(lambda: "resume here"))


@pytest.fixture
def restore_sigterm():
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_sigterm_only_sets_a_flag_while_guarded_and_the_previous_handler_comes_back(restore_sigterm):
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    with preemption.PreemptionGuard() as guard:
        assert not guard.requested
        signal.raise_signal(signal.SIGTERM)
        assert guard.requested and received == []
    signal.raise_signal(signal.SIGTERM)
    assert received == [signal.SIGTERM]


def test_a_second_sigterm_falls_back_to_the_previous_handler(restore_sigterm):
    received = []
    handler = lambda signum, frame: received.append(signum)  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    with preemption.PreemptionGuard():
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is handler


def test_preempted_prints_one_line_and_exits_with_143(restore_sigterm, capsys):
    with preemption.PreemptionGuard() as guard:
        guard.raise_if_requested(lambda: "never")  # nothing requested: no-op
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(preemption.Preempted) as raised:
            guard.raise_if_requested(lambda: "resume at iteration 1, step 3")
    assert isinstance(raised.value, SystemExit) and raised.value.code == 143
    assert capsys.readouterr().out == "preempted (SIGTERM): state saved; resume at iteration 1, step 3\n"


def test_ctrl_c_is_a_clean_stop_too_one_line_and_exit_130(restore_sigterm, capsys):
    with preemption.PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGINT)  # without the guard: KeyboardInterrupt here
        assert guard.requested
        with pytest.raises(preemption.Preempted) as raised:
            guard.raise_if_requested(lambda: "re-run the same command to resume")
    assert raised.value.code == 130
    assert capsys.readouterr().out == "interrupted (Ctrl-C): state saved; re-run the same command to resume\n"
    with pytest.raises(KeyboardInterrupt):  # the default handler is back
        signal.raise_signal(signal.SIGINT)


def test_a_second_ctrl_c_stops_at_once(restore_sigterm):
    with preemption.PreemptionGuard(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)


@pytest.mark.multibackend
def test_sigterm_mid_iteration_checkpoints_the_current_step_and_the_rerun_trains_the_rest(tmp_path,
                                                                                        restore_sigterm):
    reference = grow(tmp_path / "reference")
    with preemption.PreemptionGuard() as guard, pytest.raises(preemption.Preempted):
        grow(tmp_path / "run", guard=guard, signal_at=(1, 3))  # iteration 1: after step 3, between checkpoints
    run_dir = RunDirectory(str(tmp_path / "run"))
    assert run_dir.finished_iterations() == [0]
    assert checkpoints.steps(run_dir.checkpoint_dir(1)) == [2, 3]  # the periodic one, and one at the stop

    counts = {}
    resumed = grow(tmp_path / "run", counts=counts)
    assert counts == {1: 3, 2: 6}  # iteration 1 trains steps 3..5 only
    for got, want in zip(resumed, reference, strict=True):
        assert (got["iteration"], got["members"], got["global_step"]) == (
            want["iteration"], want["members"], want["global_step"])
        assert got["ensemble"]["loss"] == pytest.approx(want["ensemble"]["loss"], rel=1e-4)


# End to end: a smoke run on gs:// (via AIP_MODEL_DIR, as on Vertex AI) stopped by SIGTERM in iteration 1.

RUN = "gs://b/preempted"
STEPS = 20  # per iteration: --train_steps=40 over 2 iterations, a checkpoint every 5 steps


COMMAND = [sys.executable, "-m", "improve_nas.trainer.trainer", "--preset=smoke", "--dataset=fake",
           "--tf_random_seed=7", "--train_steps=40", "--save_checkpoints_steps=5"]  # model_dir: AIP_MODEL_DIR


def _names(url):
    return {obj.url[len(url) + 1:] for obj in gcs.list_blobs(url + "/")}


@pytest.mark.slow
def test_a_preempted_cloud_run_resumes_from_the_bucket_with_nothing_lost(gcs_emulator, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", AIP_MODEL_DIR=RUN,
               TMPDIR=str(tmp_path))
    process = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while "checkpoints/1/ckpt-5.npz" not in _names(RUN):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, err = process.communicate(timeout=300)
        stop_seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == preemption.EXIT_CODE, out[-2000:] + err[-3000:]
    assert stop_seconds < 60
    stopped = re.search(rf"preempted \(SIGTERM\): state saved; re-run the same command to resume {RUN} at "
                        r"iteration 1, step (\d+)", out)
    assert stopped, out[-2000:]
    step = int(stopped.group(1))
    assert 5 <= step < STEPS  # mid-iteration (5 when SIGTERM came while ckpt-5 was being uploaded)
    names = _names(RUN)
    assert "iterations/0/architecture.json" in names and "iterations/1/architecture.json" not in names
    assert max(int(name[len("checkpoints/1/ckpt-"):-4]) for name in names if name.startswith("checkpoints/1/")) \
        == step

    shutil.rmtree(tmp_path / "improve_nas")  # a fresh machine: everything comes from the bucket
    rerun = subprocess.run(COMMAND, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "1 of 2 iterations already finished" in rerun.stdout
    assert f"iteration 1: resuming at step {step}/{STEPS}" in rerun.stdout  # nothing repeated

    report = json.loads(gcs.read_bytes(f"{RUN}/report.json"))
    entries = report["iterations"]
    assert [e["iteration"] for e in entries] == [0, 1]
    assert [e["global_step"] for e in entries] == [STEPS, 2 * STEPS]  # nothing lost
    first = entries[0]["members"]
    assert len(first) == 1 and entries[1]["members"][:1] == first and len(entries[1]["members"]) == 2
    names = _names(RUN)
    assert "export/ensemble.keras" in names and "iterations/1/architecture.json" in names
    assert not [name for name in names if name.startswith("checkpoints/")]


def test_train_seconds_add_up_over_the_sessions_of_an_iteration(tmp_path, restore_sigterm, monkeypatch):
    from improve_nas.adanet.runtime import engine

    class SlowClock:  # the interrupted session's clock: 100 s pass between any two readings
        now = 0.0

        def monotonic(self):
            self.now += 100.0
            return self.now

    with monkeypatch.context() as patch:
        patch.setattr(engine, "time", SlowClock())
        with preemption.PreemptionGuard() as guard, pytest.raises(preemption.Preempted):
            grow(tmp_path / "run", guard=guard, signal_at=(0, 3))
    run_dir = RunDirectory(str(tmp_path / "run"))
    recorded = checkpoints.train_seconds(run_dir.checkpoint_dir(0), checkpoints.steps(run_dir.checkpoint_dir(0))[-1])
    assert recorded >= 100.0

    resumed = grow(tmp_path / "run")  # on the real clock: a few seconds more
    assert recorded < resumed[0]["train_seconds"] < recorded + 100.0
