"""`improve-nas select`: other ensembles of a finished run, chosen from its candidate pool without running a model.

Every iteration keeps the own logits of each candidate it trained on the selection and test rows
(`iterations/<t>/pool/logits.npz`, `adanet/runtime/pool.py`). An ensemble here outputs the weighted mean of its
members' logits (AdaNet's uniform-average ensembler when the weights are equal), so any subset can be scored from
those arrays alone. Members are chosen on the selection rows only; the test rows are read once, to report.

Methods (`size` = M):
- forward (Zaidi et al. 2021, NES): start from the best single member by the metric, then add, without replacement,
  the member that lowers the metric most, until M members; stops earlier when no member left lowers it (so it is
  never worse than the best single member). Uniform weights.
- caruana (Caruana et al. 2004): M greedy rounds from the empty ensemble, each adding (with replacement) the member
  whose addition gives the lowest metric; weights = times chosen / M. With the NLL, which is convex in the logits,
  the result is never worse than the best single member.
- prune (after SAEP, Bian et al. 2021): start from the grown (final) ensemble's members and remove, one at a time,
  the member whose removal lowers the metric most (or raises it least), down to M. Uniform weights.

The grown ensemble is scored the same way, as the uniform mean of its members' stored logits (equal to the run's
own ensemble with the default fixed mixture weights, up to float16 rounding).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile

import numpy as np

from improve_nas.adanet.calibration import classification_metrics, per_example_cross_entropy
from improve_nas.adanet.runtime import pool as candidate_pool
from improve_nas.errors import UsageError, nearest
from improve_nas.storage import fileio, integrity

METHODS = ("forward", "caruana", "prune")
METRICS = ("nll", "error")
SELECTIONS = "selections"
RESULT = "selection.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class PoolLogits:
    """Every pooled candidate of a run, stacked: logits [candidates, rows, K] per part, labels per part, and the
    members of the grown (final) ensemble."""

    names: list[str]
    selection: np.ndarray
    test: np.ndarray
    labels: dict[str, np.ndarray]
    grown: list[str]


def load_pool(model_dir: str) -> PoolLogits:
    """The pool of every finished iteration of `model_dir`, each checked against its manifest.

    Raises:
      UsageError: no finished iteration, an iteration without a pool, or pools over different rows.
    """
    fileio.check_local(model_dir)
    finished = integrity.check_iterations(model_dir)  # DamagedRunError (one line) for a damaged file
    if not finished:
        raise UsageError(f"{model_dir} holds no finished iteration (iterations/<t>/ with {integrity.ARCHITECTURE})")
    pools = []
    for iteration in finished:
        directory = integrity.iteration_dir(model_dir, iteration)
        if not os.path.exists(candidate_pool.logits_path(directory)):
            raise UsageError(f"{directory} has no candidate pool ({candidate_pool.POOL}/{candidate_pool.LOGITS}): "
                             "the run was trained with --keep_pool=False, or before pools existed")
        try:
            pools.append(candidate_pool.read(directory))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # in a run without manifests
            raise integrity.DamagedRunError(
                f"{candidate_pool.logits_path(directory)} cannot be read ({type(error).__name__}): "
                f"{integrity.retrain_hint(model_dir, iteration, finished)}") from None
    for pool, iteration in zip(pools[1:], finished[1:]):
        for part in candidate_pool.PARTS:
            if not np.array_equal(pool.labels[part], pools[0].labels[part]):
                raise UsageError(f"the pool of iteration {iteration} holds other {part} rows than iteration "
                                 f"{finished[0]}'s: the run's data changed between iterations")
    names = [name for pool in pools for name in pool.names]
    summary = integrity.read_json(os.path.join(integrity.iteration_dir(model_dir, finished[-1]), integrity.SUMMARY),
                                  way_out=integrity.retrain_hint(model_dir, finished[-1], finished))
    return PoolLogits(
        names=names,
        selection=np.stack([pool.logits["selection"][name] for pool in pools for name in pool.names]),
        test=np.stack([pool.logits["test"][name] for pool in pools for name in pool.names]),
        labels=dict(pools[0].labels), grown=list(summary["members"]))


def combine(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The ensemble logits: the weighted mean (weights summing to 1) of the members' logits [members, rows, K]."""
    return np.tensordot(np.asarray(weights, np.float64), np.asarray(logits, np.float64), axes=1)


def metric_value(logits: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """The NLL or the error of `logits` [rows, K], as `classification_metrics` defines them."""
    if metric == "nll":
        return float(per_example_cross_entropy(logits, labels).mean())
    return float((np.argmax(logits, axis=-1) != labels).mean())


def forward(logits: np.ndarray, labels: np.ndarray, size: int, metric: str) -> np.ndarray:
    """Weights [candidates] of forward selection (module docstring)."""
    chosen: list[int] = []
    best = np.inf
    while len(chosen) < size:
        scores = {j: metric_value(logits[chosen + [j]].mean(axis=0), labels, metric)
                  for j in range(len(logits)) if j not in chosen}
        if not scores:
            break
        j = min(scores, key=scores.get)
        if chosen and scores[j] >= best:
            break  # no member left lowers the metric
        chosen.append(j)
        best = scores[j]
    return _uniform(chosen, len(logits))


def caruana(logits: np.ndarray, labels: np.ndarray, size: int, metric: str) -> np.ndarray:
    """Weights [candidates] of greedy selection with replacement (module docstring)."""
    total = np.zeros(logits.shape[1:], np.float64)
    counts = np.zeros(len(logits), np.int64)
    for rounds in range(1, size + 1):
        scores = [metric_value((total + logits[j]) / rounds, labels, metric) for j in range(len(logits))]
        j = int(np.argmin(scores))
        total += logits[j]
        counts[j] += 1
    return counts / size


def prune(logits: np.ndarray, labels: np.ndarray, size: int, metric: str, *, start: list[int]) -> np.ndarray:
    """Weights [candidates] of backward elimination from the members `start` (module docstring)."""
    kept = list(start)
    while len(kept) > size:
        scores = [metric_value(logits[kept[:i] + kept[i + 1:]].mean(axis=0), labels, metric)
                  for i in range(len(kept))]
        kept.pop(int(np.argmin(scores)))
    return _uniform(kept, len(logits))


def _uniform(indices: list[int], count: int) -> np.ndarray:
    weights = np.zeros(count, np.float64)
    weights[indices] = 1.0 / len(indices)
    return weights


def check_request(method: str, size: int, metric: str, name: str | None) -> str:
    """The selection's name; one line (UsageError) for a bad method, metric, size or name."""
    if method not in METHODS:
        raise UsageError(f"--method={method!r} is not a method: {nearest(method, METHODS)}choose one of "
                         f"{', '.join(METHODS)}")
    if metric not in METRICS:
        raise UsageError(f"--metric={metric!r} is not a metric: {nearest(metric, METRICS)}choose one of "
                         f"{', '.join(METRICS)}")
    if size < 1:
        raise UsageError(f"--size={size} must be at least 1")
    name = f"{method}-{size}-{metric}" if name is None else name
    if not _NAME.fullmatch(name):
        raise UsageError(f"--name={name!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def select(model_dir: str, *, method: str, size: int, metric: str = "nll", name: str | None = None) -> dict:
    """Chooses an ensemble from the pool of `model_dir` and writes `selections/<name>/selection.json`.

    Returns the written record: method, metric, size, members (name, weight), the selection rows' and the test rows'
    `classification_metrics` of the selected ensemble and of the grown one.

    Raises:
      UsageError: bad input (see `check_request`), a size larger than the pool (forward) or the grown ensemble
        (prune), or a run without a pool; nothing is written then.
    """
    name = check_request(method, size, metric, name)
    pool = load_pool(model_dir)
    grown = [pool.names.index(member) for member in pool.grown if member in pool.names]
    if len(grown) != len(pool.grown):
        raise UsageError(f"the grown ensemble's members {pool.grown} are not all in the pool of {model_dir}")
    limit = {"forward": len(pool.names), "prune": len(grown)}.get(method)
    if limit is not None and size > limit:
        what = "pool" if method == "forward" else "grown ensemble"
        raise UsageError(f"--size={size} is larger than the {what} ({limit} members) that {method} chooses from")
    labels = pool.labels["selection"]
    if method == "prune":
        weights = prune(pool.selection, labels, size, metric, start=grown)
    else:
        weights = (forward if method == "forward" else caruana)(pool.selection, labels, size, metric)
    record = {
        "name": name, "method": method, "metric": metric, "size": size,
        "combination": "weighted mean of the members' logits",
        "members": [{"name": pool.names[j], "weight": float(weights[j])} for j in np.flatnonzero(weights)],
        **_figures(pool, weights),
        "rows": {part: len(pool.labels[part]) for part in candidate_pool.PARTS},
        "grown": {"members": pool.grown, **_figures(pool, _uniform(grown, len(pool.names)))},
    }
    fileio.write_json(os.path.join(model_dir, SELECTIONS, name, RESULT), record)
    return record


def _figures(pool: PoolLogits, weights: np.ndarray) -> dict:
    return {"selection": classification_metrics(combine(pool.selection, weights), pool.labels["selection"]),
            "test": classification_metrics(combine(pool.test, weights), pool.labels["test"])}


def side_by_side(record: dict) -> str:
    """One line: the grown ensemble next to the selected one (members, selection metric, test accuracy, NLL, ECE)."""
    def part(label: str, members: int, figures: dict) -> str:
        test = figures["test"]
        return (f"{label}: {members} member{'' if members == 1 else 's'}, selection {record['metric']} {figures['selection'][record['metric']]:.4f}"
                f", test accuracy {test['accuracy']:.4f} nll {test['nll']:.4f} ece {test['ece']:.4f}")
    return (part("grown", len(record["grown"]["members"]), record["grown"]) + " | "
            + part(record["name"], len(record["members"]), record))


def run(model_dir: str, *, method: str, size: int, metric: str = "nll", name: str | None = None) -> str:
    """`select`, then the side-by-side line and where the record went."""
    record = select(model_dir, method=method, size=size, metric=metric, name=name)
    return (side_by_side(record) + "\n"
            + f"wrote {os.path.join(model_dir, SELECTIONS, record['name'], RESULT)}\n")
