"""Loss terms of the AdaNet engine: label smoothing, distillation, named terms."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from improve_nas.adanet import losses
from improve_nas.adanet.losses import Distillation
from improve_nas.errors import UsageError

pytestmark = pytest.mark.multibackend


def _f(x) -> float:
    return float(keras.ops.convert_to_numpy(x))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


LOGITS = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]], "float32")
LABELS = np.array([0, 1], "int32")


def test_label_smoothing_target_is_exact():
    ls, k = 0.1, 3
    target = np.array([[1 - ls + ls / k, ls / k, ls / k], [ls / k, 1 - ls + ls / k, ls / k]])
    expected = -(target * _log_softmax(LOGITS.astype(np.float64))).sum(-1).mean()
    assert _f(losses.softmax_cross_entropy(LABELS, LOGITS, 0.1)) == pytest.approx(expected, rel=1e-6)
    # Same with [B, 1] labels.
    assert _f(losses.softmax_cross_entropy(LABELS[:, None], LOGITS, 0.1)) == pytest.approx(expected, rel=1e-6)


def test_plain_cross_entropy_matches_sparse_ce():
    expected = -_log_softmax(LOGITS.astype(np.float64))[[0, 1], LABELS].mean()
    assert _f(losses.softmax_cross_entropy(LABELS, LOGITS)) == pytest.approx(expected, rel=1e-6)


def test_distillation_is_zero_when_teacher_and_student_agree():
    assert _f(losses.distillation_loss(LOGITS, LOGITS)) == 0.0
    # Softmax is shift-invariant: a shifted teacher agrees as well.
    assert _f(losses.distillation_loss(LOGITS + 5.0, LOGITS)) == pytest.approx(0.0, abs=1e-6)


def test_distillation_is_kl_and_positive_otherwise():
    teacher = LOGITS[::-1].copy()
    p, log_p, log_q = np.exp(_log_softmax(teacher)), _log_softmax(teacher), _log_softmax(LOGITS)
    expected = (p * (log_p - log_q)).sum(-1).mean()
    value = _f(losses.distillation_loss(teacher, LOGITS))
    assert value > 0 and value == pytest.approx(expected, rel=1e-5)


def test_teacher_choice():
    ensemble, member = object(), object()
    pick = lambda mode: losses.select_teacher(mode, previous_ensemble_logits=ensemble, last_member_logits=member)
    assert pick(Distillation.ADAPTIVE) is ensemble
    assert pick(Distillation.BORN_AGAIN) is member
    assert pick(Distillation.NONE) is None


def test_distillation_names():
    assert Distillation.parse("born_again") is Distillation.BORN_AGAIN
    with pytest.raises(UsageError, match="'ensemble'.*none, adaptive, born_again"):
        Distillation.parse("ensemble")


def test_subnetwork_terms_add_up():
    aux = LOGITS * 0.5
    terms = losses.subnetwork_loss_terms(
        labels=LABELS, logits=LOGITS, label_smoothing=0.1, aux_logits=aux, aux_head_weight=0.4,
        teacher_logits=LOGITS[::-1].copy(), regularization=np.float32(0.25))
    values = {k: _f(v) for k, v in terms.items()}
    assert set(values) == {"ce", "kd", "aux", "l2", "subnetwork"}
    assert values["aux"] == pytest.approx(0.4 * _f(losses.softmax_cross_entropy(LABELS, aux, 0.1)), rel=1e-6)
    assert values["l2"] == 0.25 and values["kd"] > 0
    assert values["subnetwork"] == pytest.approx(values["ce"] + values["kd"] + values["aux"] + 0.25, rel=1e-6)


def test_subnetwork_terms_without_optional_parts():
    terms = losses.subnetwork_loss_terms(labels=LABELS, logits=LOGITS, label_smoothing=0.0)
    assert (_f(terms["kd"]), _f(terms["aux"]), _f(terms["l2"])) == (0.0, 0.0, 0.0)
    assert _f(terms["subnetwork"]) == pytest.approx(_f(losses.softmax_cross_entropy(LABELS, LOGITS)), rel=1e-6)


def test_ensemble_terms():
    terms = losses.ensemble_loss_terms(labels=LABELS, logits=LOGITS, complexity=np.float32(0.75))
    values = {k: _f(v) for k, v in terms.items()}
    assert set(values) == {"ensemble_ce", "complexity", "adanet_loss"}
    assert values["ensemble_ce"] == pytest.approx(_f(losses.softmax_cross_entropy(LABELS, LOGITS)), rel=1e-6)
    assert values["adanet_loss"] == pytest.approx(values["ensemble_ce"] + 0.75, rel=1e-6)
