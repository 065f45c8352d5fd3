"""Calibration metrics (improve_nas/adanet/calibration.py) against hand-computed cases and a loop-by-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from improve_nas.adanet.calibration import (
    ECE_BINS,
    brier_score,
    classification_metrics,
    expected_calibration_error,
)


def reference_metrics(logits, labels, bins=15):
    """A plain-loop reference of the documented definitions, written independently of the module."""
    logits = np.asarray(logits, dtype=np.float64)
    nll = ece = brier = hits = 0.0
    members = [[] for _ in range(bins)]
    for row, label in zip(logits, labels):
        p = np.exp(row - row.max())
        p /= p.sum()
        nll -= math.log(p[label])
        brier += sum((p[k] - (k == label)) ** 2 for k in range(len(p)))
        hits += int(np.argmax(p) == label)
        confidence = float(p.max())
        bin_index = 0  # (lo, hi] with the first bin closed at 0
        for b in range(bins):
            if b / bins < confidence <= (b + 1) / bins:
                bin_index = b
        members[bin_index].append((confidence, float(np.argmax(p) == label)))
    n = len(labels)
    for entries in members:
        if entries:
            ece += len(entries) / n * abs(np.mean([c for _, c in entries]) - np.mean([h for h, _ in entries]))
    return {"accuracy": hits / n, "nll": nll / n, "ece": ece, "brier": brier / n}


def test_perfectly_calibrated_predictions_have_zero_ece():
    # confidence 0.8 each; 4 of 5 right: the bin's accuracy equals its confidence
    confidences = np.full(5, 0.8)
    assert expected_calibration_error(confidences, [1, 1, 1, 1, 0]) == pytest.approx(0.0, abs=1e-12)
    # two bins, each calibrated: 0.5 (1 of 2 right) and 1.0 (always right)
    assert expected_calibration_error([0.5, 0.5, 1.0, 1.0], [1, 0, 1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_over_confident_predictions():
    # all at confidence 0.9, half right: |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.full(4, 0.9), [1, 0, 1, 0]) == pytest.approx(0.4)


def test_one_example_bins_weight_by_count():
    # three bins of one example each: |1 - 0.55|, |0 - 0.75|, |1 - 0.95|, each weighted 1/3
    assert expected_calibration_error([0.55, 0.75, 0.95], [1, 0, 1]) == pytest.approx((0.45 + 0.75 + 0.05) / 3)


def test_bin_edges_at_zero_and_one():
    # 1.0 falls in the last bin (14/15, 1]; 0.0 in the first [0, 1/15]: each is its own bin here
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)
    # 1.0 and 0.95 share the last bin: |mean(1, 0) - mean(1.0, 0.95)| over both rows
    assert expected_calibration_error([1.0, 0.95], [1, 0]) == pytest.approx(abs(0.5 - 0.975))
    # a confidence exactly on an inner edge belongs to the bin below it: 0.6 = 9/15 joins 0.55 in (8/15, 9/15]
    assert expected_calibration_error([0.6, 0.55], [1, 0], bins=15) == pytest.approx(abs(0.5 - 0.575))
    assert expected_calibration_error([0.6, 0.61], [1, 0], bins=15) == pytest.approx((0.4 + 0.61) / 2)


def test_brier_definition_sums_over_classes():
    # p = (0.7, 0.2, 0.1), label 0: 0.09 + 0.04 + 0.01; p = (0.5, 0.5, 0), label 2: 0.25 + 0.25 + 1
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert brier_score(probabilities, [0, 2]) == pytest.approx((0.14 + 1.5) / 2)


def test_classification_metrics_of_hand_computed_logits():
    # two classes; logits (0, log 3) give p = (0.25, 0.75); labels 1 and 0
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    metrics = classification_metrics(logits, np.array([1, 0]))
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["error"] == pytest.approx(0.5)
    assert metrics["nll"] == metrics["loss"] == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
    assert metrics["ece"] == pytest.approx(0.25)  # one bin: confidence 0.75, accuracy 0.5
    assert metrics["brier"] == pytest.approx((2 * 0.25 ** 2 + 2 * 0.75 ** 2) / 2)
    assert metrics["ece_bins"] == ECE_BINS == 15


@pytest.mark.parametrize("seed, scale", [(0, 0.5), (1, 3.0), (2, 12.0)])
def test_classification_metrics_match_the_reference(seed, scale):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(200, 7)) * scale).astype(np.float32)
    labels = rng.integers(0, 7, size=200)
    metrics, expected = classification_metrics(logits, labels), reference_metrics(logits, labels)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-10), key
    assert metrics["ece"] > 0.0


def test_no_examples_is_an_error():
    with pytest.raises(ValueError):
        expected_calibration_error([], [])
