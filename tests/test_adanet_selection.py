"""Candidate selection rules (docs/original_code.md §6.7) and the zero-debiased EMA they may read."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from improve_nas.adanet.ema import ZeroDebiasedEma
from improve_nas.adanet.selection import needs_selection_losses, select_candidate

pytestmark = pytest.mark.multibackend

NAN = float("nan")


def _never():
    raise AssertionError("selection evaluated losses it did not need")


def test_single_candidate_wins_without_evaluation():
    choice = select_candidate(num_candidates=1, has_previous=False, force_grow=False, losses=_never)
    assert (choice.index, choice.losses, choice.evaluated) == (0, None, False)


def test_force_grow_with_one_new_candidate_wins_without_evaluation():
    choice = select_candidate(num_candidates=2, has_previous=True, force_grow=True, losses=_never)
    assert (choice.index, choice.evaluated) == (1, False)


def test_without_force_grow_the_previous_ensemble_can_win():
    choice = select_candidate(num_candidates=2, has_previous=True, force_grow=False, losses=[0.4, 0.9])
    assert (choice.index, choice.losses) == (0, (0.4, 0.9))


def test_force_grow_excludes_the_previous_ensemble():
    choice = select_candidate(num_candidates=3, has_previous=True, force_grow=True, losses=lambda: [0.1, 0.9, 0.5])
    assert (choice.index, choice.losses) == (2, (0.1, 0.9, 0.5))


def test_first_iteration_with_two_candidates_compares_both_even_with_force_grow():
    choice = select_candidate(num_candidates=2, has_previous=False, force_grow=True, losses=[0.9, 0.5])
    assert choice.index == 1 and choice.evaluated


def test_nan_losses_are_skipped_like_nanargmin():
    choice = select_candidate(num_candidates=3, has_previous=True, force_grow=False, losses=[NAN, 0.7, 0.6])
    assert choice.index == 2 and math.isnan(choice.losses[0])
    choice = select_candidate(num_candidates=3, has_previous=True, force_grow=True, losses=[0.1, NAN, 0.8])
    assert choice.index == 2
    with pytest.raises(FloatingPointError, match="NaN"):
        select_candidate(num_candidates=3, has_previous=True, force_grow=True, losses=[0.1, NAN, NAN])


def test_wrong_number_of_losses_is_an_error():
    with pytest.raises(ValueError, match="2 selection losses for 3"):
        select_candidate(num_candidates=3, has_previous=True, force_grow=False, losses=[0.1, 0.2])


@pytest.mark.parametrize("num_candidates, has_previous, force_grow, expected", [
    (1, False, True, False), (2, True, True, False), (2, True, False, True), (2, False, True, True),
    (3, True, True, True),
])
def test_needs_selection_losses(num_candidates, has_previous, force_grow, expected):
    assert needs_selection_losses(num_candidates=num_candidates, has_previous=has_previous,
                                  force_grow=force_grow) is expected


def _value(ema) -> float:
    return float(keras.ops.convert_to_numpy(ema.result()))


def test_ema_is_zero_debiased():
    ema = ZeroDebiasedEma(0.9)
    assert math.isnan(_value(ema))  # no data yet: ignored by nanargmin
    ema.update(5.0)
    assert _value(ema) == pytest.approx(5.0)  # debiasing removes the pull towards the zero start
    for x in (1.0, 2.0):
        ema.update(x)
    biased = 0.9 * (0.9 * 0.5 + 0.1 * 1.0) + 0.1 * 2.0
    assert _value(ema) == pytest.approx(biased / (1 - 0.9 ** 3), rel=1e-6)
    assert [v.trainable for v in ema.weights] == [False, False]


def test_ema_of_a_constant_is_the_constant():
    ema = ZeroDebiasedEma(0.9)
    for _ in range(7):
        ema.update(np.float32(0.25))
    assert _value(ema) == pytest.approx(0.25, rel=1e-6)
