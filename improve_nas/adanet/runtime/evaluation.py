"""Test-partition metrics of a finished ensemble and of each of its members."""

from __future__ import annotations

import numpy as np

from improve_nas.adanet.runtime.inference import BatchedPredictor


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def per_example_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax cross-entropy of each row, in float64."""
    log_probs = _log_softmax(np.asarray(logits))
    return -log_probs[np.arange(len(labels)), np.asarray(labels).reshape(-1).astype(np.int64)]


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and mean softmax cross-entropy of integer `labels` [N] under `logits` [N, K]."""
    return {"accuracy": float((np.asarray(logits).argmax(axis=-1) == labels).mean()),
            "loss": float(per_example_cross_entropy(logits, labels).mean())}


def evaluate(model, images: np.ndarray, labels: np.ndarray, *, predict: BatchedPredictor) -> dict:
    """Accuracy and mean cross-entropy over every example of `images`.

    Args:
      model: an `EnsembleModel` built with `with_member_logits=True`.
      images: the examples, e.g. the test partition or its first `eval_steps` batches.
      labels: their integer labels.
      predict: runs the model over all rows (`inference.BatchedPredictor`: its batch size changes no result).

    Returns:
      `{"ensemble": {"accuracy", "loss"}, "members": {name: {"accuracy", "loss"}}, "examples": n}`.
    """
    if len(images) == 0:
        raise ValueError("evaluation got no examples")
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    outputs = predict(model, images)
    return {"ensemble": classification_metrics(outputs["logits"], labels),
            "members": {name: classification_metrics(logits, labels) for name, logits in outputs["members"].items()},
            "examples": len(labels)}
