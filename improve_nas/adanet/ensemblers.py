"""Ensemblers: how the members' outputs are mixed into the ensemble logits (docs/original_code.md §6.3, §6.4).

An ensembler is a Keras layer called as `ensembler(logits, features)` with one entry per member,
in member order: `logits[j]` is [B, K], `features[j]` is [B, D_j] (or None when not needed). It
returns the ensemble logits [B, K] and offers `complexity_penalty()`, the AdaNet complexity term
added to the ensemble loss. Callers stop gradients into member outputs themselves (the iteration
model does), so an ensembler never trains members.

Mixture weights are created fresh for every candidate ensemble of every iteration (no warm start,
docs/original_code.md §10, pitfall 10); `serialize_ensembler` / `restore_ensembler` carry the chosen one's config and
learned values into `EnsembleRecord.ensembler` as plain JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from improve_nas.adanet.choices import MIXTURE_WEIGHT_TYPES as WEIGHT_TYPES
from improve_nas.errors import UsageError

ENSEMBLER_KINDS = ("complexity_regularized", "mean")


@keras.saving.register_keras_serializable(package="improve_nas")
class MeanEnsembler(keras.layers.Layer):
    """Uniform average of the member logits; no variables, no penalty."""

    def __init__(self, *, num_members: int, **kwargs):
        super().__init__(**kwargs)
        self.num_members = int(num_members)
        self.built = True

    def call(self, logits, features=None):
        del features
        return ops.mean(ops.stack(list(logits), axis=0), axis=0)

    def complexity_penalty(self):
        return ops.zeros(())

    def mixture_weight_values(self) -> list[float]:
        """The effective weight of each member, for reports."""
        return [1.0 / self.num_members] * self.num_members

    def get_config(self):
        return {**super().get_config(), "num_members": self.num_members}


@keras.saving.register_keras_serializable(package="improve_nas")
class ComplexityRegularizedEnsembler(keras.layers.Layer):
    """AdaNet's weighted ensemble: `F = bias + Σ_j weighted_j`, penalty `Σ_j (λ·r_j + β)·‖w_j‖₁`.

    Mixture weights per member j: `scalar` [] and `vector` [K] start at 1/N and scale the member's
    logits; `matrix` [D_j, K] starts at zeros and maps the member's features (its logits are
    ignored, so an unlearned matrix ensemble outputs zeros, as in the original). The bias [K]
    exists only with `use_bias`. Pass `trainable=False` when mixture weights are not learned.

    Args:
        num_members: N.
        num_classes: K.
        feature_dims: D_j per member; required for `matrix`.
        complexities: r(h_j) per member; default 1.0 each.
        weight_type: One of `WEIGHT_TYPES`.
        adanet_lambda: λ.
        adanet_beta: β.
        use_bias: Adds a bias [K] initialised to zeros.
    """

    def __init__(
        self,
        *,
        num_members: int,
        num_classes: int,
        feature_dims: Sequence[int] | None = None,
        complexities: Sequence[float] | None = None,
        weight_type: str = "scalar",
        adanet_lambda: float = 0.0,
        adanet_beta: float = 0.0,
        use_bias: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if weight_type not in WEIGHT_TYPES:
            raise UsageError(
                f"unknown mixture_weight_type {weight_type!r}; choose one of {', '.join(WEIGHT_TYPES)}"
            )
        self.num_members = int(num_members)
        self.num_classes = int(num_classes)
        self.feature_dims = None if feature_dims is None else [int(d) for d in feature_dims]
        self.complexities = [1.0] * self.num_members if complexities is None else [
            float(c) for c in complexities
        ]
        self.weight_type = weight_type
        self.adanet_lambda = float(adanet_lambda)
        self.adanet_beta = float(adanet_beta)
        self.use_bias = bool(use_bias)
        if len(self.complexities) != self.num_members:
            raise ValueError(f"{len(self.complexities)} complexities for {self.num_members} members")
        if weight_type == "matrix" and (
            self.feature_dims is None or len(self.feature_dims) != self.num_members
        ):
            raise ValueError(f"matrix mixture weights need one feature dim per member, got {feature_dims}")
        self.build()

    def build(self, input_shape=None):
        del input_shape
        n, k = self.num_members, self.num_classes
        self.mixture_weights = []
        for j in range(n):
            if self.weight_type == "matrix":
                shape, init = (self.feature_dims[j], k), "zeros"
            else:
                shape = () if self.weight_type == "scalar" else (k,)
                init = keras.initializers.Constant(1.0 / n)
            self.mixture_weights.append(
                self.add_weight(shape=shape, initializer=init, name=f"mixture_weight_{j}")
            )
        self.bias = self.add_weight(shape=(k,), initializer="zeros", name="bias") if self.use_bias else None
        self.built = True

    def call(self, logits, features=None):
        logits = list(logits)
        if len(logits) != self.num_members:
            raise ValueError(f"got {len(logits)} members, expected {self.num_members}")
        terms = []
        for j, w in enumerate(self.mixture_weights):
            if self.weight_type == "matrix":
                if features is None or features[j] is None:
                    raise ValueError("matrix mixture weights need every member's 'features'")
                terms.append(ops.matmul(features[j], w))
            else:
                terms.append(logits[j] * w)  # [] and [K] both broadcast over [B, K]
        total = ops.sum(ops.stack(terms, axis=0), axis=0)
        return total if self.bias is None else total + self.bias

    def complexity_penalty(self):
        """`Σ_j (λ·r_j + β)·‖w_j‖₁` (docs/original_code.md §6.4: r as given, no sqrt; bias not penalised)."""
        penalty = ops.zeros(())
        for r, w in zip(self.complexities, self.mixture_weights):
            coefficient = self.adanet_lambda * r + self.adanet_beta
            if coefficient:
                penalty = penalty + coefficient * ops.sum(ops.abs(w))
        return penalty

    def mixture_weight_values(self) -> list[Any]:
        """Current weight values as nested Python lists, for reports."""
        return [np.asarray(ops.convert_to_numpy(w.value)).tolist() for w in self.mixture_weights]

    def get_config(self):
        return {
            **super().get_config(),
            "num_members": self.num_members,
            "num_classes": self.num_classes,
            "feature_dims": self.feature_dims,
            "complexities": self.complexities,
            "weight_type": self.weight_type,
            "adanet_lambda": self.adanet_lambda,
            "adanet_beta": self.adanet_beta,
            "use_bias": self.use_bias,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsemblerSpec:
    """How every candidate ensemble of an iteration mixes its members.

    Attributes:
        kind: `complexity_regularized` (AdaNet's default) or `mean`.
        weight_type: `scalar`, `vector` or `matrix`.
        adanet_lambda: λ of the complexity penalty.
        adanet_beta: β of the complexity penalty.
        use_bias: Adds a learned bias [K].
        learn_mixture_weights: Trains the mixture weights on the AdaNet loss; otherwise they stay
            at their initial values (1/N for scalar/vector: the plain logit average).
    """

    kind: str = "complexity_regularized"
    weight_type: str = "scalar"
    adanet_lambda: float = 0.0
    adanet_beta: float = 0.0
    use_bias: bool = False
    learn_mixture_weights: bool = False

    def __post_init__(self):
        if self.kind not in ENSEMBLER_KINDS:
            raise UsageError(f"unknown ensembler {self.kind!r}; choose one of {', '.join(ENSEMBLER_KINDS)}")
        if self.weight_type not in WEIGHT_TYPES:
            raise UsageError(
                f"unknown mixture_weight_type {self.weight_type!r}; choose one of {', '.join(WEIGHT_TYPES)}"
            )

    @property
    def needs_features(self) -> bool:
        return self.kind == "complexity_regularized" and self.weight_type == "matrix"

    @property
    def learns(self) -> bool:
        """Whether the ensembles have trainable variables."""
        return self.kind == "complexity_regularized" and self.learn_mixture_weights

    def build(
        self,
        *,
        num_members: int,
        num_classes: int,
        feature_dims: Sequence[int] | None,
        complexities: Sequence[float],
        name: str | None = None,
    ) -> keras.layers.Layer:
        """Returns a fresh ensembler for one candidate ensemble."""
        # Always float32, whatever the members compute in or the global dtype policy says.
        if self.kind == "mean":
            return MeanEnsembler(num_members=num_members, name=name, dtype="float32")
        return ComplexityRegularizedEnsembler(
            num_members=num_members,
            num_classes=num_classes,
            feature_dims=feature_dims,
            complexities=complexities,
            weight_type=self.weight_type,
            adanet_lambda=self.adanet_lambda,
            adanet_beta=self.adanet_beta,
            use_bias=self.use_bias,
            trainable=self.learn_mixture_weights,
            name=name,
            dtype="float32",
        )


def serialize_ensembler(ensembler: keras.layers.Layer) -> dict[str, Any]:
    """Config and variable values of an ensembler as plain JSON (for `EnsembleRecord.ensembler`)."""
    return {
        "config": keras.saving.serialize_keras_object(ensembler),
        "weights": [np.asarray(w).tolist() for w in ensembler.get_weights()],
    }


def restore_ensembler(data: dict[str, Any]) -> keras.layers.Layer:
    """Rebuilds a frozen ensembler from `serialize_ensembler` output (trainable=False)."""
    ensembler = keras.saving.deserialize_keras_object(data["config"])
    ensembler.set_weights([np.asarray(w, dtype="float32") for w in data["weights"]])
    ensembler.trainable = False
    return ensembler
