"""Test-partition metrics of a finished ensemble and of each of its members."""

from __future__ import annotations

import numpy as np

from improve_nas.adanet.calibration import classification_metrics
from improve_nas.adanet.runtime.inference import BatchedPredictor


def evaluate(model, images: np.ndarray, labels: np.ndarray, *, predict: BatchedPredictor) -> dict:
    """`calibration.classification_metrics` over every example of `images`, of the ensemble and of each member.

    Args:
      model: an `EnsembleModel` built with `with_member_logits=True`.
      images: the examples, e.g. the test partition or its first `eval_steps` batches.
      labels: their integer labels.
      predict: runs the model over all rows (`inference.BatchedPredictor`: its batch size changes no result).

    Returns:
      `{"ensemble": metrics, "members": {name: metrics}, "examples": n}`, metrics as `classification_metrics`
      returns them (accuracy, error, loss = nll, nll, ece, ece_bins, brier).
    """
    if len(images) == 0:
        raise ValueError("evaluation got no examples")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    outputs = predict(model, images)
    return {"ensemble": classification_metrics(outputs["logits"], labels),
            "members": {name: classification_metrics(logits, labels) for name, logits in outputs["members"].items()},
            "examples": len(labels)}
