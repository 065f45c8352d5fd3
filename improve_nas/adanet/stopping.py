"""Stopping a run when growth stops paying: a pure function of the finished iterations' summaries.

The loss judged is the one selection already compares: the chosen ensemble's selection loss (its entry in the
summary's `candidates`; the selection partition's, or the holdout's when the run holds one out). An iteration
improves when its loss is lower than the best so far by more than `min_delta` (absolute, in the loss's own units:
the selection loss is a cross-entropy whose scale is set by the task, so a fixed margin means the same at every
point of a run; a relative one would shrink with the loss). As in Keras's `EarlyStopping`, the best moves only on
such an improvement, so a slow creep of small gains still counts once it adds up to the margin. An iteration without
a loss (not measured, or NaN) does not improve.

Nothing is stored: a resumed run derives the same decision from the summaries on disk, and trains nothing more.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

EARLY_STOPPING = "early_stopping"
COMPLETED = "completed"
UNFINISHED = "unfinished"  # fewer iterations than asked for, and no reason to stop yet (interrupted, or running)


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """The run stops after iteration `after_iteration`: no improvement by `min_delta` for `patience` iterations."""

    after_iteration: int
    best_iteration: int
    best_loss: float
    patience: int
    min_delta: float

    def explain(self, num_iterations: int) -> str:
        return (f"stopping after iteration {self.after_iteration + 1}/{num_iterations}: the selection loss has not "
                f"improved by {self.min_delta:g} for {self.patience} iterations (best {self.best_loss:.4f} at "
                f"iteration {self.best_iteration + 1})")


def chosen_selection_loss(summary: dict[str, Any]) -> float | None:
    """The selection loss of the ensemble iteration `summary` chose (None where selection measured none)."""
    for candidate in summary.get("candidates", []):
        if candidate["name"] == summary["chosen"]:
            loss = candidate.get("selection_loss")
            return None if loss is None or math.isnan(loss) else float(loss)
    return None


def early_stop(losses: Sequence[float | None], *, patience: int, min_delta: float) -> EarlyStop | None:
    """The first point at which `patience` iterations in a row failed to improve on the best loss; None: go on.

    `losses[t]` is iteration t's chosen selection loss. Patience 0 turns stopping off.
    """
    if patience <= 0:
        return None
    best, best_iteration, waited = math.inf, -1, 0
    for iteration, loss in enumerate(losses):
        if loss is not None and not math.isnan(loss) and loss < best - min_delta:
            best, best_iteration, waited = loss, iteration, 0
            continue
        waited += 1
        if waited >= patience and best_iteration >= 0:
            return EarlyStop(after_iteration=iteration, best_iteration=best_iteration, best_loss=best,
                             patience=patience, min_delta=min_delta)
    return None


def decide(summaries: Sequence[dict[str, Any]], *, patience: int, min_delta: float) -> EarlyStop | None:
    """`early_stop` on the chosen selection losses of `summaries` (iterations 0, 1, ... in order)."""
    return early_stop([chosen_selection_loss(s) for s in summaries], patience=patience, min_delta=min_delta)


def outcome(summaries: Sequence[dict[str, Any]], *, num_iterations: int, patience: int,
            min_delta: float) -> dict[str, Any]:
    """Why the run stopped where it did, for the report: early stopping, all iterations done, or not yet done."""
    done = len(summaries)
    stop = decide(summaries, patience=patience, min_delta=min_delta)
    if stop is not None and stop.after_iteration < num_iterations - 1:
        return {"reason": EARLY_STOPPING, "after_iteration": stop.after_iteration,
                "best_iteration": stop.best_iteration, "detail": stop.explain(num_iterations)}
    if done >= num_iterations:
        return {"reason": COMPLETED, "after_iteration": done - 1, "best_iteration": None,
                "detail": f"all {num_iterations} iterations finished"}
    return {"reason": UNFINISHED, "after_iteration": done - 1 if done else None, "best_iteration": None,
            "detail": f"{done} of {num_iterations} iterations finished"}
