"""What the AdaNet engine asks of a search space, and what it remembers of a finished ensemble.

A search space plugs in through two interfaces:

- `Builder`: one candidate subnetwork. Its `build_subnetwork` returns a `keras.Model` whose
  `call(x, training)` returns a dict with `"logits"` [B, K], optionally `"features"` [B, D] (the
  last hidden layer; needed by matrix mixture weights) and optionally `"aux_logits"` [B, K]
  (returned only when `training=True`; enters the loss with `aux_head_weight`). Weight
  regularisation (L2) lives in the model's `losses` (e.g. `kernel_regularizer`) and is added to
  that subnetwork's own loss. A subnetwork may compute in any precision (e.g. a `mixed_bfloat16`
  dtype policy); the engine casts its outputs to float32 (`float32_outputs`), so losses, mixture
  weights and metrics are always float32.
- `Generator`: proposes the builders of iteration t from the previous ensemble's record and, if it
  asks for it (a `history` parameter), the record of every candidate trained so far
  (`CandidateRecord`s, chosen or not). It must be a deterministic function of `(previous_ensemble,
  iteration, history, state)`, so that a resumed run proposes what an uninterrupted one proposes.

What persists of a finished ensemble is plain data (`MemberRecord`, `EnsembleRecord`), JSON
round-trippable, with no Keras objects inside; member weights are saved beside it by the loop.
"""

from __future__ import annotations

import abc
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import keras


class Builder(abc.ABC):
    """Builds one candidate subnetwork of an AdaNet iteration."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Name, unique among the builders of one iteration (e.g. `NasNet_A_6.0_768_cifar`)."""

    @property
    def complexity(self) -> float:
        """r(h) of the AdaNet complexity penalty (docs/original_code.md §6.4); used as given, no sqrt."""
        return 1.0

    def shared(self) -> dict[str, Any]:
        """Plain JSON values to persist with the member (e.g. architecture numbers).

        A generator reads them back from `EnsembleRecord.members[-1].shared` in the next iteration.
        """
        return {}

    @abc.abstractmethod
    def build_subnetwork(self, *, num_classes: int, input_shape: tuple[int, ...]) -> keras.Model:
        """Returns a new, untrained subnetwork (see the module docstring for its outputs).

        Args:
            num_classes: K, the width of `"logits"`.
            input_shape: Shape of one input example, without the batch dimension.
        """


class Generator(abc.ABC):
    """Proposes the candidate subnetworks of each iteration."""

    @abc.abstractmethod
    def generate_candidates(
        self, previous_ensemble: EnsembleRecord | None, iteration: int, history: Sequence[CandidateRecord] = ()
    ) -> list[Builder]:
        """Returns the builders to train in `iteration` (0-based), with unique names.

        Args:
            previous_ensemble: The ensemble chosen at the end of `iteration - 1`, or None at 0.
            iteration: The AdaNet iteration about to start.
            history: Every candidate subnetwork trained in iterations 0..iteration-1, in order. The loop passes it
                only to a generator whose `generate_candidates` declares a `history` parameter (or **kwargs), so
                generators written before it existed keep working.
        """

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, stored with every finished iteration. Stateless by default."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what `state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state {dict(state)!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemberRecord:
    """One member of a finished ensemble.

    Attributes:
        name: Unique name within the run, `t{iteration}_{builder_name}`.
        iteration: The iteration that trained it.
        builder_name: `Builder.name`, to find the builder again through the generator.
        shared: `Builder.shared()` at the time it was built.
        complexity: `Builder.complexity`.
    """

    name: str
    iteration: int
    builder_name: str
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    complexity: float = 1.0

    @classmethod
    def from_builder(cls, builder: Builder, iteration: int) -> MemberRecord:
        return cls(
            name=member_name(iteration, builder.name),
            iteration=iteration,
            builder_name=builder.name,
            shared=dict(builder.shared()),
            complexity=float(builder.complexity),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberRecord:
        return cls(
            name=data["name"],
            iteration=int(data["iteration"]),
            builder_name=data["builder_name"],
            shared=dict(data.get("shared", {})),
            complexity=float(data.get("complexity", 1.0)),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsembleRecord:
    """A finished (chosen) ensemble: enough to rebuild it with the members' saved weights.

    Attributes:
        name: `t{iteration}_{candidate name}`, e.g. `t1_NasNet_A_6.0_768_cifar_grow`.
        iteration: The iteration at whose end it was chosen (its last member's iteration, unless
            the previous ensemble won without `force_grow`).
        members: In mixing order: the mixture weights follow this order.
        ensembler: `ensemblers.serialize_ensembler(...)` output: config and mixture-weight values.
        adanet_loss_ema: Zero-debiased EMA of its training AdaNet loss at the end of its
            iteration, if it was tracked; EMA-based selection compares it with new candidates.
    """

    name: str
    iteration: int
    members: tuple[MemberRecord, ...]
    ensembler: dict[str, Any]
    adanet_loss_ema: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "iteration": self.iteration,
            "members": [m.to_dict() for m in self.members],
            "ensembler": self.ensembler,
            "adanet_loss_ema": self.adanet_loss_ema,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnsembleRecord:
        ema = data.get("adanet_loss_ema")
        return cls(
            name=data["name"],
            iteration=int(data["iteration"]),
            members=tuple(MemberRecord.from_dict(m) for m in data["members"]),
            ensembler=dict(data["ensembler"]),
            adanet_loss_ema=None if ema is None else float(ema),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EnsembleRecord:
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateRecord:
    """One candidate subnetwork a finished iteration trained, chosen or not: what a searching generator learns from.

    Attributes:
        name: `t{iteration}_{builder_name}`.
        iteration: The iteration that trained it.
        builder_name: `Builder.name`.
        shared: `Builder.shared()` (e.g. its architecture).
        complexity: `Builder.complexity`.
        selection_loss: The lowest selection loss among the candidate ensembles it belonged to: the loss of the
            ensemble it would have made with the members chosen before it. None when selection evaluated nothing
            (one candidate, or force_grow with one new one).
        loss, accuracy: Its own cross-entropy and accuracy on the selection partition, from the same evaluator pass;
            None without one (nothing evaluated, or selection by the EMA of the training loss).
        error, nll, ece, brier: The rest of its own metrics from that pass (`calibration.classification_metrics`:
            1 - accuracy, nll = loss, ECE over `calibration.ECE_BINS` bins, multi-class Brier score); None likewise.
        params: Its trainable parameters.
        train_seconds: Seconds the iteration trained; the candidates of one iteration train fused, so they share it.
        chosen: Whether it joined the chosen ensemble.
    """

    name: str
    iteration: int
    builder_name: str
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    complexity: float = 1.0
    selection_loss: float | None = None
    loss: float | None = None
    accuracy: float | None = None
    error: float | None = None
    nll: float | None = None
    ece: float | None = None
    brier: float | None = None
    params: int = 0
    train_seconds: float = 0.0
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateRecord:
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def float32_outputs(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A subnetwork's output dict with every floating tensor cast to float32 (a no-op for float32 ones)."""
    return {key: keras.ops.cast(value, "float32")
            if keras.backend.is_float_dtype(keras.backend.standardize_dtype(value.dtype)) else value
            for key, value in outputs.items()}


def member_name(iteration: int, builder_name: str) -> str:
    """AdaNet's subnetwork name: builders may repeat across iterations, members may not."""
    return f"t{iteration}_{builder_name}"


def validate_unique_names(names: Sequence[str], what: str) -> None:
    """Raises ValueError naming the duplicates (a generator or strategy bug, not user input)."""
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise ValueError(f"{what} names must be unique within an iteration; repeated: {duplicates}")
