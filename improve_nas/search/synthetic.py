"""A SYNTHETIC objective over genotypes, to test search strategies without training anything.

`SyntheticObjective(seed)` hides a uniformly drawn target genotype; a genotype's loss is its distance to the target
(per block, the cheaper of the two ways to match its pairs to the target's: an operation differing costs
`OPERATION_COST`, a state differing `STATE_COST`), scaled to [0, 1], plus small seeded noise, minus a drift per
iteration. The drift mimics the real selection loss, which falls as the ensemble grows, so losses of different
iterations are not comparable; strategies must cope with it. Nothing here says anything about real architectures:
the landscape is separable and smooth by construction, which is what makes a strategy's search visible.

`distance_pmf` gives the exact distribution of a uniform genotype's distance to the target, hence the analytic
expectation of random search's best distance after N draws (`expected_best_distance`). `simulate` runs a strategy
(random, evolution, controller) against the objective as the AdaNet loop would, one member joining per iteration.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from improve_nas.errors import UsageError, nearest
from improve_nas.search import proposals, space

OPERATION_COST = 2
STATE_COST = 1


def _block_distance(block: space.Block, target: space.Block) -> int:
    return min(_pair_cost(block[0], target[0]) + _pair_cost(block[1], target[1]),
               _pair_cost(block[0], target[1]) + _pair_cost(block[1], target[0]))


class SyntheticObjective:
    """SYNTHETIC: distance to a hidden target genotype drawn from `seed` (see the module docstring).

    Args:
        seed: Draws the target and seeds the noise.
        op_set: The operation set the target is drawn from (and candidates are expected in).
        num_blocks: Blocks per cell of the target; candidates must have as many.
        noise: Standard deviation of the Gaussian noise added to the scaled distance.
        drift: Subtracted from the loss per iteration.
    """

    def __init__(self, seed: int, op_set: str = "nasnet", num_blocks: int = space.DEFAULT_NUM_BLOCKS, *,
                 noise: float = 0.01, drift: float = 0.02):
        self.seed, self.op_set, self.num_blocks = int(seed), op_set, num_blocks
        self.noise, self.drift = noise, drift
        self.target = space.sample(np.random.default_rng(np.random.SeedSequence([self.seed, 0x7A16E7])), op_set,
                                   num_blocks)
        self.max_distance = 2 * 2 * num_blocks * (OPERATION_COST + STATE_COST)

    def distance(self, genotype: space.Genotype) -> int:
        """The noise-free distance to the target: 0 at the target, `max_distance` at most."""
        total = 0
        for cell, target in zip(genotype.cells, self.target.cells):
            if cell.num_blocks != target.num_blocks:
                raise UsageError(f"the synthetic objective has {target.num_blocks} blocks per cell; "
                                 f"got a cell of {cell.num_blocks}")
            total += sum(_block_distance(b, t) for b, t in zip(cell.blocks, target.blocks))
        return total

    def loss(self, genotype: space.Genotype, iteration: int = 0) -> float:
        """Scaled distance + noise (seeded by the objective's seed, the genotype and the iteration) - drift."""
        key = [self.seed, int(genotype.digest(), 16) & 0xFFFFFFFF, int(iteration)]
        noise = float(np.random.default_rng(np.random.SeedSequence(key)).normal()) * self.noise
        return self.distance(genotype) / self.max_distance + noise - self.drift * iteration

    def distance_pmf(self) -> np.ndarray:
        """P(distance = d) for a genotype drawn by `space.sample` over the same set and blocks, d = 0..max."""
        operations = space.op_set(self.op_set)
        pmf = np.ones(1)
        for target in self.target.cells:
            for i, target_block in enumerate(target.blocks):
                pairs = [(op, s) for op in operations for s in range(space.NUM_INPUT_STATES + i)]
                first = np.array([_pair_cost(p, target_block[0]) for p in pairs])
                second = np.array([_pair_cost(p, target_block[1]) for p in pairs])
                block = np.minimum(first[:, None] + second[None, :], second[:, None] + first[None, :])
                counts = np.bincount(block.ravel(), minlength=2 * (OPERATION_COST + STATE_COST) + 1)
                pmf = np.convolve(pmf, counts / counts.sum())
        return pmf

    def expected_best_distance(self, draws: int) -> tuple[float, float]:
        """Mean and standard deviation of the smallest distance among `draws` independent uniform genotypes."""
        survival = np.cumsum(self.distance_pmf()[::-1])[::-1]  # survival[d] = P(D >= d)
        at_least = survival ** draws  # P(min >= d)
        mean = float(at_least[1:].sum())
        second = float(sum((2 * d - 1) * at_least[d] for d in range(1, len(at_least))))  # E[min^2]
        return mean, float(np.sqrt(max(second - mean * mean, 0.0)))


def _pair_cost(pair, other) -> int:
    return OPERATION_COST * (pair[0] != other[0]) + STATE_COST * (pair[1] != other[1])


STRATEGIES = ("random", "evolution", "controller")


@dataclasses.dataclass(frozen=True)
class Simulation:
    """One SYNTHETIC search run: the best distance found after each iteration, the record, the ensemble."""

    best_distances: list[int]
    history: list[dict]
    ensemble: list[space.Genotype]


def simulate(strategy: str, seed: int, iterations: int, k: int, *, op_set: str = "darts", num_blocks: int = 3,
             noise: float = 0.01, drift: float = 0.02, **options) -> Simulation:
    """Runs a search strategy for `iterations` × `k` candidates on `SyntheticObjective(seed)`: SYNTHETIC, no training.

    Each iteration mimics one AdaNet iteration: the strategy proposes `k` genotypes from the record so far, each is
    scored by `loss` (its selection loss), and the one with the lowest joins the ensemble (whose genotypes
    evolution's `parents="ensemble"` draws from). `options` go to the strategy's function (population, tournament,
    parents; the controller's units, learning_rate, entropy_weight, baseline_decay); the controller's state is
    carried from call to call as the engine would.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; {nearest(str(strategy), STRATEGIES)}"
                         f"valid: {', '.join(STRATEGIES)}")
    objective = SyntheticObjective(seed, op_set, num_blocks, noise=noise, drift=drift)
    history, ensemble, best, state = [], [], [], None
    for iteration in range(iterations):
        if strategy == "random":
            genotypes = proposals.random_proposals(seed, iteration, history, k, op_set, num_blocks, **options)
        elif strategy == "evolution":
            genotypes = proposals.evolution_proposals(seed, iteration, history, k, op_set, num_blocks=num_blocks,
                                                      ensemble=ensemble, **options)
        else:
            from improve_nas.search import controller  # Keras, only when asked for

            genotypes, state = controller.controller_proposals(seed, iteration, history, k, op_set, state=state,
                                                               num_blocks=num_blocks, **options)
        losses = [objective.loss(genotype, iteration) for genotype in genotypes]
        history += [proposals.history_entry(iteration, g, loss) for g, loss in zip(genotypes, losses)]
        ensemble.append(genotypes[int(np.argmin(losses))])
        found = min(objective.distance(genotype) for genotype in genotypes)
        best.append(min(found, best[-1]) if best else found)
    return Simulation(best, history, ensemble)
