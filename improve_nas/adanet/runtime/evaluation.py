"""Test-partition metrics of a finished ensemble and of each of its members."""

from __future__ import annotations

import numpy as np

from improve_nas.adanet.calibration import classification_metrics, fit_temperature
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


def scale_temperature(model, select: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                      predict: BatchedPredictor) -> dict:
    """Temperature scaling of an ensemble: T fitted on the `select` (images, labels), judged on `test`.

    One pass over each partition (on top of `evaluate`'s; only when a run asks for it).

    Returns:
      `{"temperature": T, "test_before": metrics, "test_after": metrics of logits / T}` (`classification_metrics`).
    """
    logits = {name: predict(model, images)["logits"] for name, (images, _) in (("select", select), ("test", test))}
    temperature = fit_temperature(logits["select"], select[1])
    return {"temperature": temperature, "test_before": classification_metrics(logits["test"], test[1]),
            "test_after": classification_metrics(np.asarray(logits["test"], np.float64) / temperature, test[1])}
