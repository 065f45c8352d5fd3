"""The improve_nas subnetwork generators: what each AdaNet iteration tries (docs/original_code.md §2.3).

simple and dynamic come from the 2019 code; random, evolution and controller search the cell space
(`strategy_generators.py`).
"""

from __future__ import annotations

from improve_nas.adanet.subnetwork import EnsembleRecord, Generator
from improve_nas.config import HParams
from improve_nas.search.builders import NASNetBuilder
from improve_nas.search.strategy_generators import ControllerGenerator, EvolutionGenerator, RandomGenerator

DEEPER_CELLS = 3  # the dynamic generator's "deeper" candidate adds one cell per stack
WIDER_FILTERS = 10  # and its "wider" candidate adds this many base filters


class SimpleGenerator(Generator):
    """The same NASNet every iteration, with `hparams.genotype`'s cells (NASNet-A by default): after B iterations, an
    ensemble of B identical architectures."""

    def __init__(self, hparams: HParams, *, iteration_steps: int, dtype: str | None = None):
        self._builder = NASNetBuilder.from_hparams(hparams, total_training_steps=iteration_steps, dtype=dtype)

    def generate_candidates(self, previous_ensemble, iteration):
        return [self._builder]


class DynamicGenerator(Generator):
    """A deeper (+3 cells) and a wider (+10 filters) NASNet than the member chosen last.

    It grows from the previous ensemble's *last* member, read from the plain values that member persisted (not from
    graph tensors, which the original tried and which could not work after iteration 0). The starting architecture
    itself is never a candidate: iteration 0 already grows it. Both candidates keep that member's genotype (NASNet-A
    for a member recorded without one); the first iteration starts from `hparams.genotype`.
    """

    def __init__(self, hparams: HParams, *, iteration_steps: int, dtype: str | None = None):
        self._base = NASNetBuilder.from_hparams(hparams, total_training_steps=iteration_steps, dtype=dtype)

    def generate_candidates(self, previous_ensemble: EnsembleRecord | None, iteration: int):
        base = self._base
        cells, filters = base.hparams.num_cells, base.hparams.num_conv_filters
        if previous_ensemble is not None and previous_ensemble.members:
            last = previous_ensemble.members[-1].shared
            cells, filters = int(last["num_cells"]), int(last["num_conv_filters"])
            base = base.with_genotype(NASNetBuilder.genotype_of(last))
        return [base.with_architecture(num_cells=cells + DEEPER_CELLS, num_conv_filters=filters),
                base.with_architecture(num_cells=cells, num_conv_filters=filters + WIDER_FILTERS)]


SEARCH_GENERATORS = {"random": RandomGenerator, "evolution": EvolutionGenerator, "controller": ControllerGenerator}
GENERATORS = {"simple": SimpleGenerator, "dynamic": DynamicGenerator, **SEARCH_GENERATORS}


def make_generator(hparams: HParams, *, iteration_steps: int, seed: int = 0, dtype: str | None = None) -> Generator:
    """The `hparams.generator` generator; its NASNets use the Keras dtype policy `dtype` (None: the global one).

    The searching generators draw their proposals from `seed`, the run's root seed.
    """
    if hparams.generator in SEARCH_GENERATORS:
        return SEARCH_GENERATORS[hparams.generator](hparams, iteration_steps=iteration_steps, seed=seed, dtype=dtype)
    return GENERATORS[hparams.generator](hparams, iteration_steps=iteration_steps, dtype=dtype)
