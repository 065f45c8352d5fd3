"""Test-partition metrics of a finished ensemble and of each of its members."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _Accumulator:
    def __init__(self):
        self.loss = 0.0
        self.correct = 0
        self.count = 0

    def add(self, logits: np.ndarray, labels: np.ndarray) -> None:
        log_probs = _log_softmax(np.asarray(logits))
        self.loss -= float(log_probs[np.arange(len(labels)), labels].sum())
        self.correct += int((log_probs.argmax(axis=-1) == labels).sum())
        self.count += len(labels)

    def result(self) -> dict[str, float]:
        return {"accuracy": self.correct / self.count, "loss": self.loss / self.count}


def evaluate(model, batches: Iterable) -> dict:
    """Accuracy and mean cross-entropy over every example of `batches`.

    Args:
      model: an `EnsembleModel` built with `with_member_logits=True`.
      batches: `(images, labels)` pairs, e.g. one pass over the test partition.

    Returns:
      `{"ensemble": {"accuracy", "loss"}, "members": {name: {"accuracy", "loss"}}, "examples": n}`.
    """
    ensemble = _Accumulator()
    members: dict[str, _Accumulator] = {}
    for images, labels in batches:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        outputs = model.predict_on_batch(images)
        ensemble.add(np.asarray(outputs["logits"]), labels)
        for name, logits in outputs["members"].items():
            members.setdefault(name, _Accumulator()).add(np.asarray(logits), labels)
    if ensemble.count == 0:
        raise ValueError("evaluation got no examples")
    return {"ensemble": ensemble.result(), "members": {name: acc.result() for name, acc in members.items()},
            "examples": ensemble.count}
