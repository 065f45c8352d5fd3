"""Loss terms of an AdaNet iteration, backend-agnostic (`keras.ops` only; docs/original_code.md §5, §6.4).

Per candidate subnetwork (`subnetwork_loss_terms`):
    ce          label-smoothed softmax CE of its logits, batch mean
    kd          distillation from the teacher, KL(softmax(teacher) ‖ softmax(student)), batch mean
    aux         aux_head_weight · label-smoothed CE of its aux logits (0 without aux head)
    l2          its own regularisation losses
    subnetwork  ce + kd + aux + l2, what its optimizer minimises
Per candidate ensemble (`ensemble_loss_terms`):
    ensemble_ce  plain softmax CE of the ensemble logits, batch mean (no smoothing)
    complexity   the ensembler's complexity penalty
    adanet_loss  ensemble_ce + complexity: trains mixture weights, and selects candidates

`LossSpec` holds the settings (label smoothing, distillation mode, aux-head weight).

Distillation uses KL instead of the original CE(softmax(teacher), student): the teacher's entropy
is constant, so both have the same gradient, and KL is exactly 0 when teacher and student agree.
Temperature 1, weight 1, no smoothing, teacher under stop_gradient (docs/original_code.md §5.2).
"""

from __future__ import annotations

import dataclasses
import enum

from keras import ops

from improve_nas.errors import UsageError


class Distillation(str, enum.Enum):
    """Which teacher, if any, a new subnetwork distils from (only from iteration 1 on)."""

    NONE = "none"
    ADAPTIVE = "adaptive"  # the previous ensemble's logits
    BORN_AGAIN = "born_again"  # the previous ensemble's last member's own logits (docs/design.md §5)

    @classmethod
    def parse(cls, value: str | Distillation) -> Distillation:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise UsageError(f"unknown knowledge_distillation {value!r}; choose one of {choices}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSpec:
    """Loss settings of the candidate subnetworks (docs/original_code.md §5).

    Attributes:
        label_smoothing: ls of the hard-label CE (and of the aux CE).
        distillation: `none`, `adaptive` or `born_again`; no term at iteration 0.
        aux_head_weight: Weight of the aux-logits CE when a subnetwork returns `aux_logits`.
    """

    label_smoothing: float = 0.1
    distillation: Distillation = Distillation.NONE
    aux_head_weight: float = 0.4

    def __post_init__(self):
        object.__setattr__(self, "distillation", Distillation.parse(self.distillation))
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise UsageError(f"label_smoothing must be in [0, 1], got {self.label_smoothing!r}")


def select_teacher(distillation: Distillation, *, previous_ensemble_logits=None, last_member_logits=None):
    """The teacher logits for `distillation`, or None (no previous ensemble: no teacher).

    Args:
        distillation: The mode.
        previous_ensemble_logits: The previous ensemble's logits (adaptive).
        last_member_logits: The previous ensemble's last member's own logits, not scaled by its
            mixture weight (born_again; docs/design.md §5 departs from the original here).
    """
    if distillation is Distillation.ADAPTIVE:
        return previous_ensemble_logits
    if distillation is Distillation.BORN_AGAIN:
        return last_member_logits
    return None


def _flat_labels(labels):
    """Integer labels [B] from [B] or [B, 1]."""
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def softmax_cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Batch-mean CE against `onehot·(1−ls) + ls/K`, in float32 (docs/original_code.md §5.1: ls over all K classes)."""
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    target = ops.one_hot(_flat_labels(labels), num_classes, dtype=logits.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_probs = ops.log_softmax(logits, axis=-1)
    return ops.mean(-ops.sum(target * log_probs, axis=-1))


def distillation_loss(teacher_logits, student_logits):
    """Batch-mean KL(softmax(teacher) ‖ softmax(student)) in float32; no gradient reaches the teacher."""
    teacher_log_probs = ops.log_softmax(ops.stop_gradient(ops.cast(teacher_logits, "float32")), axis=-1)
    student_log_probs = ops.log_softmax(ops.cast(student_logits, "float32"), axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return ops.mean(kl)


def subnetwork_loss_terms(
    *,
    labels,
    logits,
    label_smoothing: float,
    aux_logits=None,
    aux_head_weight: float = 0.0,
    teacher_logits=None,
    regularization=None,
) -> dict:
    """Named loss terms of one candidate subnetwork (see the module docstring).

    Args:
        labels: Integer labels [B] or [B, 1].
        logits: The subnetwork's logits [B, K] (training mode).
        label_smoothing: ls of the hard-label terms.
        aux_logits: Its aux-head logits, or None.
        aux_head_weight: Weight of the aux term.
        teacher_logits: The distillation teacher's logits, or None for no distillation.
        regularization: Scalar sum of its regularisation losses, or None.
    """
    zero = ops.zeros((), dtype="float32")  # every term is float32, whatever the subnetwork computes in
    terms = {"ce": softmax_cross_entropy(labels, logits, label_smoothing)}
    terms["kd"] = zero if teacher_logits is None else distillation_loss(teacher_logits, logits)
    terms["aux"] = zero if aux_logits is None else aux_head_weight * softmax_cross_entropy(
        labels, aux_logits, label_smoothing)
    terms["l2"] = zero if regularization is None else ops.cast(regularization, "float32")
    terms["subnetwork"] = terms["ce"] + terms["kd"] + terms["aux"] + terms["l2"]
    return terms


def ensemble_loss_terms(*, labels, logits, complexity) -> dict:
    """Named loss terms of one candidate ensemble: AdaNet loss = plain CE + complexity penalty."""
    terms = {
        "ensemble_ce": softmax_cross_entropy(labels, logits),
        "complexity": ops.cast(complexity, "float32"),
    }
    terms["adanet_loss"] = terms["ensemble_ce"] + terms["complexity"]
    return terms
