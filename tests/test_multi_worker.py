"""`--distribution=multi_worker`: two worker processes on loopback train what one process trains; only the chief writes.

The end-to-end check launches the trainer twice with a TF_CONFIG naming a chief and a worker on 127.0.0.1 (one CPU
device each, so the global batch of 16 is split 8 + 8), and once alone with the same flags. Augmentation and drop path
are off: their random draws repeat across replicas (tf_distribution.py), which would make the runs differ by design.
The fast tests cover TF_CONFIG parsing and the one-line usage errors.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from improve_nas.adanet.runtime.cluster import cluster_from_env, parse_tf_config
from improve_nas.adanet.runtime.distribution import check_cluster
from improve_nas.errors import UsageError

FLAGS = ["--preset=smoke", "--dataset=fake", "--train_steps=4", "--tf_random_seed=5",
         "--hparams=num_cells=3,num_conv_filters=2,drop_path_keep_prob=1.0",
         "--data_params=augmentation=none,cutout=False"]
TIMEOUT = 420


def _tf_config(cluster: dict, task_type: str, index: int = 0) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _trainer(args: list[str], *, log: str, **env) -> subprocess.Popen:
    environment = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    environment.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow", **env)
    return subprocess.Popen([sys.executable, "-m", "improve_nas.trainer.trainer", *args], env=environment,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # files: a full pipe would block a peer


def _wait(processes: dict[str, subprocess.Popen], logs: dict[str, str]) -> dict[str, int]:
    deadline = time.monotonic() + TIMEOUT
    try:
        return {name: process.wait(timeout=max(1.0, deadline - time.monotonic()))
                for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def _tail(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return f"--- {os.path.basename(path)}\n" + handle.read()[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    chief_port, worker_port = _free_ports(2)
    cluster = {"chief": [f"127.0.0.1:{chief_port}"], "worker": [f"127.0.0.1:{worker_port}"]}
    model_dir, alone_dir = str(root / "run"), str(root / "alone")
    scratch = {name: root / f"tmp-{name}" for name in ("chief", "worker")}
    logs = {name: str(root / f"{name}.log") for name in ("chief", "worker", "alone")}
    for directory in scratch.values():
        directory.mkdir()
    started = time.monotonic()
    processes = {  # the one-process run alongside: the two workers spend much of their time waiting for each other
        name: _trainer([*FLAGS, f"--model_dir={model_dir}", "--distribution=multi_worker"], log=logs[name],
                       TF_CONFIG=_tf_config(cluster, name), TMPDIR=str(scratch[name]))
        for name in ("chief", "worker")}
    processes["alone"] = _trainer([*FLAGS, f"--model_dir={alone_dir}"], log=logs["alone"])
    codes = _wait(processes, logs)
    assert codes == {"chief": 0, "worker": 0, "alone": 0}, "\n".join(_tail(path) for path in logs.values())
    return {"model_dir": model_dir, "alone_dir": alone_dir, "logs": logs, "scratch": scratch,
            "pids": {name: process.pid for name, process in processes.items()},
            "seconds": time.monotonic() - started}


def _report(directory: str) -> dict:
    with open(os.path.join(directory, "report.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.slow
def test_the_chief_writes_a_complete_run_directory(runs):
    model_dir = runs["model_dir"]
    report = _report(model_dir)
    assert [entry["iteration"] for entry in report["iterations"]] == [0, 1]
    assert report["final"]["members"] == 2
    for name in ("config.json", "env.json", "report.md", "iterations/0/architecture.json",
                 "iterations/1/architecture.json", "export/saved_model/saved_model.pb", "export/ensemble.keras"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    with open(runs["logs"]["chief"], encoding="utf-8") as handle:
        assert "this process is chief 0 of 2 workers, 2 replicas in all" in handle.read()


@pytest.mark.slow
def test_the_worker_writes_nothing_into_model_dir(runs):
    model_dir = runs["model_dir"]
    with open(runs["logs"]["worker"], encoding="utf-8") as handle:
        log = handle.read()
    assert "this process is worker 0 of 2 workers" in log and "the chief writes model_dir" in log
    assert f"working copy {runs['scratch']['worker']}" in log  # it trained in a scratch copy...
    assert not os.listdir(runs["scratch"]["worker"])  # ...and deleted it
    # TensorBoard event file names carry the writer's process id: all of model_dir's are the chief's
    events = glob.glob(os.path.join(model_dir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
    assert events and all(f".{runs['pids']['chief']}." in os.path.basename(path) for path in events)


@pytest.mark.slow
def test_two_workers_train_what_one_process_trains(runs):
    distributed, alone = _report(runs["model_dir"]), _report(runs["alone_dir"])

    def numbers(report):
        return [value for entry in report["iterations"] for value in (
            entry["ensemble"]["loss"], entry["ensemble"]["accuracy"],
            *(m[k] for m in entry["member_metrics"].values() for k in ("loss", "accuracy")))]

    assert [e["chosen"] for e in distributed["iterations"]] == [e["chosen"] for e in alone["iterations"]]
    assert [e["members"] for e in distributed["iterations"]] == [e["members"] for e in alone["iterations"]]
    np.testing.assert_allclose(numbers(distributed), numbers(alone), rtol=1e-4, atol=1e-5)
    print(f"2 workers + 1 process: {runs['seconds']:.0f} s")


# ---- fast checks ---------------------------------------------------------------------------------------------------

CLUSTER = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}


def test_tf_config_roles():
    chief = parse_tf_config(_tf_config(CLUSTER, "chief"))
    worker = parse_tf_config(_tf_config(CLUSTER, "worker", 1))
    assert (chief.is_chief, chief.num_workers, chief.task) == (True, 3, "chief 0")
    assert (worker.is_chief, worker.num_workers, worker.task) == (False, 3, "worker 1")
    # without a chief task, worker 0 is the chief (TensorFlow's rule)
    no_chief = {"worker": ["127.0.0.1:2", "127.0.0.1:3"]}
    assert parse_tf_config(_tf_config(no_chief, "worker", 0)).is_chief
    assert not parse_tf_config(_tf_config(no_chief, "worker", 1)).is_chief
    assert cluster_from_env({}) is None and cluster_from_env({"TF_CONFIG": " "}) is None


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not JSON"),
    ('{"cluster": {"chief": ["a:1"]}}', '"task"'),
    (_tf_config({**CLUSTER, "ps": ["127.0.0.1:4"]}, "chief"), "task type(s) ps are not supported"),
    (_tf_config(CLUSTER, "evaluator"), "task type 'evaluator' is not one of: chief, worker"),
    (_tf_config(CLUSTER, "worker", 2), "task worker 2 is not in the cluster"),
    (_tf_config({"chief": "127.0.0.1:1"}, "chief"), "must be a list of host:port addresses"),
])
def test_a_bad_tf_config_is_one_clear_error(text, reason):
    with pytest.raises(UsageError) as error:
        parse_tf_config(text)
    message = str(error.value)
    assert "\n" not in message and message.startswith("environment variable TF_CONFIG is invalid") \
        and reason in message, message


def test_a_cluster_needs_multi_worker_and_multi_worker_needs_a_cluster(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _tf_config(CLUSTER, "worker", 1))
    for name in ("none", "mirrored"):
        with pytest.raises(UsageError, match=r"TF_CONFIG names a cluster of 3 workers \(this process is worker 1\) "
                                             rf"but distribution is '{name}'; pass --distribution=multi_worker"):
            check_cluster(name)
    assert check_cluster("multi_worker").task == "worker 1"
    monkeypatch.setenv("TF_CONFIG", _tf_config({"chief": ["127.0.0.1:1"]}, "chief"))  # a one-replica Vertex AI job
    assert check_cluster("none").num_workers == 1
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(UsageError, match="distribution 'multi_worker' needs the TF_CONFIG environment variable"):
        check_cluster("multi_worker")
    assert check_cluster("none") is None


@pytest.mark.parametrize("backend, distribution, expected", [
    ("tensorflow", "none", "pass --distribution=multi_worker"),
    ("jax", "multi_worker", "distribution 'multi_worker' needs the tensorflow Keras backend"),
])
def test_the_trainer_refuses_with_exit_code_2_and_writes_nothing(tmp_path, backend, distribution, expected):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "improve_nas.trainer.trainer", *FLAGS, f"--model_dir={model_dir}",
         f"--distribution={distribution}"], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
                 TF_CONFIG=_tf_config({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "chief")))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert not model_dir.exists()
