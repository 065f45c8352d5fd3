"""Classification and calibration metrics of logits, in float64 numpy (what the reports and TensorBoard show).

Definitions (of `classification_metrics`; p = softmax(logits), y = the one-hot label, N examples, K classes):

- accuracy: the fraction of rows whose argmax is the label; error = 1 - accuracy.
- nll: the mean softmax cross-entropy -log p_label (also under the older key "loss").
- ece: expected calibration error of the top label (Guo et al. 2017): the confidences max_k p_k fall into
  `ECE_BINS` equal-width bins over [0, 1], each right-closed ((i/B, (i+1)/B]; a confidence of 0 joins the first);
  ece = sum over bins of (rows in the bin / N) * |accuracy of the bin - mean confidence of the bin|.
- brier: the multi-class Brier score, mean over rows of sum_k (p_k - y_k)^2 (0 is perfect, 2 the worst; not divided
  by K, and not the binary score of the top label).
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15  # Guo et al. 2017; the reports write it next to the figure as "ece_bins"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def per_example_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax cross-entropy of each row, in float64."""
    log_probs = log_softmax(logits)
    return -log_probs[np.arange(len(log_probs)), _int_labels(labels)]


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of top-label `confidences` [N] in [0, 1] whose predictions were `correct` [N] (bool), as defined above."""
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(confidences) == 0:
        raise ValueError("calibration error of no examples")
    index = np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(index, weights=correct - confidences, minlength=bins)  # per bin: count * (accuracy - confidence)
    return float(np.abs(gap).sum() / len(confidences))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of sum_k (p_k - y_k)^2."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    one_hot = np.eye(probabilities.shape[-1])[_int_labels(labels)]
    return float(((probabilities - one_hot) ** 2).sum(axis=-1).mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, error, loss (= nll), nll, ece (with "ece_bins"), brier of integer `labels` [N] under `logits` [N, K]."""
    labels = _int_labels(labels)
    log_probs = log_softmax(logits)
    probabilities = np.exp(log_probs)
    predictions = log_probs.argmax(axis=-1)
    accuracy = float((predictions == labels).mean())
    nll = float(-log_probs[np.arange(len(labels)), labels].mean())
    return {"accuracy": accuracy, "error": 1.0 - accuracy, "loss": nll, "nll": nll,
            "ece": expected_calibration_error(probabilities.max(axis=-1), predictions == labels),
            "ece_bins": ECE_BINS, "brier": brier_score(probabilities, labels)}


def _int_labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels).reshape(-1).astype(np.int64)


LOG_TEMPERATURE_RANGE = (-5.0, 5.0)  # T from e^-5 to e^5: far beyond what a trained classifier needs


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, tolerance: float = 1e-6) -> float:
    """The scalar T > 0 minimising the NLL of `logits / T` (temperature scaling, Guo et al. 2017), in numpy.

    The NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over `LOG_TEMPERATURE_RANGE` finds
    its minimum (to `tolerance` in log T); T = 1 leaves the logits as they are. Fit it on held-out data (the
    selection partition), never on the data it is judged on.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = _int_labels(labels)

    def nll(log_t: float) -> float:
        return float(per_example_cross_entropy(logits / np.exp(log_t), labels).mean())

    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    low, high = LOG_TEMPERATURE_RANGE
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    nll_a, nll_b = nll(a), nll(b)
    while high - low > tolerance:
        if nll_a <= nll_b:
            high, b, nll_b = b, a, nll_a
            a = high - ratio * (high - low)
            nll_a = nll(a)
        else:
            low, a, nll_a = a, b, nll_b
            b = low + ratio * (high - low)
            nll_b = nll(b)
    return float(np.exp((low + high) / 2.0))
