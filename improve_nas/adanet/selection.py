"""Choosing the best candidate ensemble at the end of an iteration (docs/original_code.md §6.7).

Candidates are indexed like `IterationModel.selection_names`: the previous ensemble first (when
there is one), then the new candidate ensembles. Rules, in order:

1. One candidate: it wins; nothing is evaluated.
2. `force_grow`, a previous ensemble and exactly one new candidate: the new one wins; nothing is
   evaluated.
3. Otherwise: `nanargmin` of each candidate's selection loss, which is either the mean per-batch
   AdaNet loss from an evaluator pass (`evaluate_adanet_losses`: training partition, no
   augmentation, inference mode) or the EMA of the training AdaNet loss
   (`IterationModel.adanet_loss_emas`). With `force_grow` the previous ensemble is excluded;
   without it, it may win and the ensemble does not grow this iteration.

Use `needs_selection_losses` before training to know whether the losses will be read at all (no
EMA to track, no evaluator pass to run, frozen members left out of training). EMA selection
without `force_grow` tracks the previous ensemble's EMA on the current iteration's batches, as
AdaNet did (`IterationModel(previous_competes=True)`), so it competes on equal terms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from improve_nas.adanet.calibration import classification_metrics, per_example_cross_entropy
from improve_nas.adanet.runtime.inference import BatchedPredictor


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen candidate and every candidate's selection loss (None when not evaluated)."""

    index: int
    losses: tuple[float, ...] | None

    @property
    def evaluated(self) -> bool:
        return self.losses is not None


def needs_selection_losses(*, num_candidates: int, has_previous: bool, force_grow: bool) -> bool:
    """Whether rule 3 applies, i.e. selection will read losses (counting the previous ensemble)."""
    if num_candidates == 1:
        return False
    return not (force_grow and has_previous and num_candidates == 2)


def select_candidate(
    *,
    num_candidates: int,
    has_previous: bool,
    force_grow: bool,
    losses: Sequence[float] | Callable[[], Sequence[float]],
) -> Selection:
    """Applies the rules of the module docstring.

    Args:
        num_candidates: Number of selection candidates, the previous ensemble included.
        has_previous: Whether index 0 is the previous ensemble.
        force_grow: Exclude the previous ensemble from the comparison.
        losses: One loss per candidate, or a callable computing them (called only if needed).

    Raises:
        FloatingPointError: Every eligible candidate's loss is NaN.
    """
    if num_candidates < 1:
        raise ValueError("selection needs at least one candidate")
    if not needs_selection_losses(num_candidates=num_candidates, has_previous=has_previous,
                                  force_grow=force_grow):
        return Selection(index=num_candidates - 1, losses=None)
    values = tuple(float(v) for v in (losses() if callable(losses) else losses))
    if len(values) != num_candidates:
        raise ValueError(f"got {len(values)} selection losses for {num_candidates} candidates")
    first = 1 if force_grow and has_previous else 0
    eligible = values[first:]
    if all(math.isnan(v) for v in eligible):
        raise FloatingPointError(f"every eligible candidate's selection loss is NaN: {values}")
    return Selection(index=first + int(np.nanargmin(eligible)), losses=values)


@dataclasses.dataclass(frozen=True)
class SelectionPass:
    """What one evaluator pass measures: each selection candidate's loss, and each new member's own metrics.

    Attributes:
        losses: One AdaNet loss per `IterationModel.selection_names` entry (`evaluate_adanet_losses`).
        members: New member name -> `classification_metrics` of its own logits over the same rows (accuracy, error,
            loss = nll, nll, ece, ece_bins, brier).
        member_logits: New member name -> its logits [rows, K] over those rows (what the candidate pool keeps).
    """

    losses: list[float]
    members: dict[str, dict[str, float]]
    member_logits: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)


def evaluate_adanet_losses(model, images: np.ndarray, labels: np.ndarray, *, batch_size: int,
                           steps: int | None = None, predict: BatchedPredictor) -> list[float]:
    """Mean per-batch AdaNet loss of each selection candidate of an `IterationModel` (`evaluate_selection`)."""
    return evaluate_selection(model, images, labels, batch_size=batch_size, steps=steps, predict=predict).losses


def evaluate_selection(model, images: np.ndarray, labels: np.ndarray, *, batch_size: int,
                       steps: int | None = None, predict: BatchedPredictor) -> SelectionPass:
    """One evaluator pass: the selection candidates' AdaNet losses and the new members' own metrics.

    The evaluator's batches are the partition's consecutive `batch_size` rows (the first `steps` of them, or all), as
    AdaNet's evaluator read them; each batch's mean cross-entropy counts once, a partial last batch included. `predict`
    runs the model over those rows in chunks of its own size, which changes no result (`inference.py`). A member's own
    metrics are means over the rows (what a generator learning from the run reads, not what selection compares).

    Args:
        model: The trained `IterationModel`; run in inference mode.
        images: The partition, e.g. the training partition without augmentation (AdaNet) or a held-out split.
        labels: Its integer labels.
        batch_size: Rows per evaluator batch.
        steps: Evaluator batches; None: one pass over the partition.
        predict: A `BatchedPredictor`.

    Returns:
        `SelectionPass`: per `model.selection_names` entry, plain CE of the ensemble logits plus the ensemble's
        complexity penalty, averaged over batches; per new member, its loss, accuracy and calibration.
    """
    rows = len(images) if steps is None else min(len(images), steps * batch_size)
    if rows == 0:
        raise ValueError("evaluate_adanet_losses got no examples")
    labels = np.asarray(labels).reshape(-1)[:rows]
    outputs = predict(model, images[:rows], pick=lambda out: {
        "ensembles": out["ensembles"], "members": {name: out["members"][name] for name in model.member_names}})
    batch = np.arange(rows) // batch_size
    counts = np.bincount(batch)
    penalties = np.asarray(model.complexity_penalties(), dtype=np.float64)
    per_batch = [np.bincount(batch, weights=per_example_cross_entropy(outputs["ensembles"][name], labels)) / counts
                 for name in model.selection_names]
    members = {name: classification_metrics(logits, labels.astype(np.int64))
               for name, logits in outputs["members"].items()}
    return SelectionPass(losses=[float(v) for v in np.mean(per_batch, axis=1) + penalties], members=members,
                         member_logits=dict(outputs["members"]))
