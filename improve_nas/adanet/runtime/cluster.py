"""The cluster a launcher describes in `TF_CONFIG`, and this process's role in it (no TensorFlow needed to read it).

    TF_CONFIG='{"cluster": {"chief": ["10.0.0.2:2222"], "worker": ["10.0.0.3:2222"]},
                "task": {"type": "worker", "index": 0}}'

Vertex AI sets it in every replica of a custom job: worker pool 0 is the `chief`, pool 1 the `worker`s (pools 2 and 3,
`ps` and `evaluator`, are not used by improve_nas). A one-replica job gets a one-task cluster and trains as if
TF_CONFIG were unset. The chief is task `chief` 0 or, in a cluster without one, `worker` 0 (TensorFlow's rule); it is
the only process that writes the run directory (`distribution.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

from improve_nas.errors import UsageError

TF_CONFIG = "TF_CONFIG"
TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's task in a cluster of `num_workers` training processes (the chief counts as one)."""

    task_type: str
    task_index: int
    num_workers: int
    has_chief: bool

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0 and self.task_type == ("chief" if self.has_chief else "worker")

    @property
    def task(self) -> str:
        return f"{self.task_type} {self.task_index}"


def cluster_from_env(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster in `environ["TF_CONFIG"]`; None when it is unset or empty. Raises UsageError if it is malformed."""
    text = environ.get(TF_CONFIG, "").strip()
    return parse_tf_config(text) if text else None


def parse_tf_config(text: str) -> Cluster:
    """Parses a TF_CONFIG value.

    Raises:
        UsageError: one line saying what is wrong: not JSON, no `cluster` or `task`, a task type improve_nas does not
            run (`ps`, `evaluator`), or a task that is not in the cluster.
    """
    def fail(reason: str) -> UsageError:
        return UsageError(f"environment variable {TF_CONFIG} is invalid: {reason}")

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(f"not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict) \
            or not isinstance(value.get("task"), dict):
        raise fail('expected {"cluster": {TYPE: [ADDRESS, ...]}, "task": {"type": TYPE, "index": N}}')
    cluster, task = value["cluster"], value["task"]
    unsupported = sorted(name for name, addresses in cluster.items() if name not in TASK_TYPES and addresses)
    if unsupported:
        raise fail(f"task type(s) {', '.join(unsupported)} are not supported; improve_nas trains with "
                   f"{' and '.join(TASK_TYPES)} tasks only")
    for name, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) and a for a in addresses):
            raise fail(f"cluster[{name!r}] must be a list of host:port addresses")
    if len(cluster.get("chief", [])) > 1:
        raise fail(f"a cluster has at most one chief, not {len(cluster['chief'])}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TASK_TYPES:
        raise fail(f"task type {task_type!r} is not one of: {', '.join(TASK_TYPES)}")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster.get(task_type, [])):
        raise fail(f"task {task_type} {index!r} is not in the cluster ({len(cluster.get(task_type, []))} "
                   f"{task_type} address(es))")
    return Cluster(task_type=task_type, task_index=index,
                   num_workers=sum(len(cluster.get(name, [])) for name in TASK_TYPES),
                   has_chief=bool(cluster.get("chief")))
