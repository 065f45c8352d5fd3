"""Ensemble strategies: which members form each candidate ensemble of an iteration (docs/original_code.md §6.1).

A strategy answers *which* members an ensemble has; the ensembler (`ensemblers.py`) answers *how*
they are mixed. Members are listed previous ensemble's first, then new subnetworks, which is also
the order of the mixture weights.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

from improve_nas.adanet.subnetwork import Builder, EnsembleRecord
from improve_nas.errors import UsageError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsembleCandidate:
    """One candidate ensemble of an iteration.

    Attributes:
        name: Unique within the iteration, e.g. `{builder}_grow`.
        builder_names: The new subnetworks it contains, in mixing order.
        previous_members: Indices into the previous ensemble's members that it keeps.
    """

    name: str
    builder_names: tuple[str, ...]
    previous_members: tuple[int, ...] = ()


class Strategy(abc.ABC):
    """Groups this iteration's new builders (and previous members) into candidate ensembles."""

    @abc.abstractmethod
    def generate_ensemble_candidates(
        self, builders: Sequence[Builder], previous_ensemble: EnsembleRecord | None
    ) -> list[EnsembleCandidate]:
        """Returns the candidate ensembles, in a stable order."""


def _all_previous(previous_ensemble: EnsembleRecord | None) -> tuple[int, ...]:
    return tuple(range(len(previous_ensemble.members))) if previous_ensemble else ()


class GrowStrategy(Strategy):
    """AdaNet's default: one candidate per new builder, the previous members plus it."""

    def generate_ensemble_candidates(self, builders, previous_ensemble):
        keep = _all_previous(previous_ensemble)
        return [EnsembleCandidate(name=f"{b.name}_grow", builder_names=(b.name,), previous_members=keep)
                for b in builders]


class SoloStrategy(Strategy):
    """One candidate per new builder, alone (no previous members)."""

    def generate_ensemble_candidates(self, builders, previous_ensemble):
        del previous_ensemble
        return [EnsembleCandidate(name=f"{b.name}_solo", builder_names=(b.name,)) for b in builders]


class AllStrategy(Strategy):
    """A single candidate: the previous members plus every new builder."""

    def generate_ensemble_candidates(self, builders, previous_ensemble):
        return [EnsembleCandidate(name="all", builder_names=tuple(b.name for b in builders),
                                  previous_members=_all_previous(previous_ensemble))]


STRATEGIES = {"grow": GrowStrategy, "solo": SoloStrategy, "all": AllStrategy}


def make_strategy(name: str | Strategy) -> Strategy:
    """Returns the strategy called `name` (case-insensitive); a `Strategy` instance is returned as it is."""
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str):
        raise UsageError(f"strategy must be a Strategy instance or one of {', '.join(STRATEGIES)}, got {name!r}")
    try:
        return STRATEGIES[name.lower()]()
    except KeyError:
        raise UsageError(f"unknown ensemble strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None
