"""The search strategies as AdaNet generators: random (NES-RS), evolution (NES-RE) and controller (NAS-RL).

Each iteration a strategy proposes `candidates_per_iteration` genotypes of the `search_space` operation set from the
record of every candidate trained so far (`improve_nas.adanet.CandidateRecord`, handed over by the engine as
`history`); each genotype becomes a NASNet with the run's macro settings (`num_cells`, `num_conv_filters`, ...) and
the K candidates train fused on the same batches. The engine keeps the ensemble whose selection loss is lowest, so
what a candidate adds to the ensemble is what is searched for.

Proposals are pure functions of (run seed, iteration, record, stored state) (`proposals.py`, `controller.py`), so a
run interrupted anywhere and resumed proposes what an uninterrupted run proposes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from improve_nas.adanet.subnetwork import CandidateRecord, EnsembleRecord, Generator
from improve_nas.config import HParams
from improve_nas.search import proposals, space
from improve_nas.search.builders import NASNetBuilder


def history_entries(history: Sequence[CandidateRecord]) -> list[dict]:
    """The record in the plain form the strategies read; candidates without a genotype (none here) are left out.

    A selection loss that was not evaluated stays None: the strategies rank it behind every scored candidate.
    """
    return [{"iteration": record.iteration, "genotype": record.shared["genotype"],
             "selection_loss": record.selection_loss} for record in history if "genotype" in record.shared]


def ensemble_genotypes(previous_ensemble: EnsembleRecord | None) -> list[dict | None]:
    """The genotypes (dict form) of the current ensemble's members, None for one without (NES-RE's parents)."""
    if previous_ensemble is None:
        return []
    return [member.shared.get("genotype") for member in previous_ensemble.members]


class SearchGenerator(Generator):
    """K searched genotypes per iteration, each a NASNet builder; subclasses choose the genotypes."""

    def __init__(self, hparams: HParams, *, iteration_steps: int, seed: int, dtype: str | None = None):
        self._hparams = hparams
        self._seed = int(seed)
        self._base = NASNetBuilder(hparams, total_training_steps=iteration_steps, dtype=dtype)

    def generate_candidates(self, previous_ensemble: EnsembleRecord | None, iteration: int,
                            history: Sequence[CandidateRecord] = ()):
        genotypes = self.propose(iteration, history_entries(history), previous_ensemble)
        return [self._base.with_genotype(genotype) for genotype in genotypes]

    def propose(self, iteration: int, history: list[dict],
                previous_ensemble: EnsembleRecord | None) -> list[space.Genotype]:
        raise NotImplementedError


class RandomGenerator(SearchGenerator):
    """NES-RS grown greedily (Zaidi et al. 2021; Li & Talwalkar 2019's baseline): K new uniform genotypes."""

    def propose(self, iteration, history, previous_ensemble):
        hp = self._hparams
        return proposals.random_proposals(self._seed, iteration, history, hp.candidates_per_iteration,
                                          hp.search_space, hp.num_blocks)


class EvolutionGenerator(SearchGenerator):
    """Regularized evolution made ensemble-aware (NES-RE): see `proposals.evolution_proposals`."""

    def propose(self, iteration, history, previous_ensemble):
        hp = self._hparams
        return proposals.evolution_proposals(
            self._seed, iteration, history, hp.candidates_per_iteration, hp.search_space,
            population=hp.population, tournament=hp.tournament, num_blocks=hp.num_blocks, parents=hp.parents,
            ensemble=ensemble_genotypes(previous_ensemble))


class ControllerGenerator(SearchGenerator):
    """The NAS-RL / NASNet LSTM controller (`controller.py`); its weights and optimizer state are the generator's
    state, stored with every finished iteration and restored on resume."""

    def __init__(self, hparams: HParams, *, iteration_steps: int, seed: int, dtype: str | None = None):
        super().__init__(hparams, iteration_steps=iteration_steps, seed=seed, dtype=dtype)
        self._state: dict[str, Any] | None = None

    def propose(self, iteration, history, previous_ensemble):
        from improve_nas.search.controller import controller_proposals

        hp = self._hparams
        genotypes, self._state = controller_proposals(
            self._seed, iteration, history, hp.candidates_per_iteration, hp.search_space, state=self._state,
            num_blocks=hp.num_blocks, units=hp.controller_units, learning_rate=hp.controller_learning_rate,
            entropy_weight=hp.controller_entropy_weight, baseline_decay=hp.controller_baseline_decay)
        return genotypes

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._state = state.get("controller")
