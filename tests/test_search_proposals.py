"""Search strategies (improve_nas.search.proposals) on the synthetic objective: determinism in (seed, history),
no repeats, fitness by rank, parents from the ensemble, bad input. The evidence that the strategies search is in
test_search_strategies.py."""

from __future__ import annotations

import numpy as np
import pytest

from improve_nas.errors import UsageError
from improve_nas.search import proposals, space, synthetic

OP_SET, BLOCKS, ITERATIONS, K, SEEDS = "darts", 3, 15, 4, range(50)


def _run(strategy, seed, iterations=ITERATIONS, k=K):
    run = synthetic.simulate(strategy, seed, iterations, k, op_set=OP_SET, num_blocks=BLOCKS)
    return run.best_distances[-1], run.history


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_proposals_are_a_function_of_seed_and_history(strategy):
    _, history = _run(strategy, seed=7, iterations=6)
    again = _run(strategy, seed=7, iterations=6)[1]
    assert again == history
    # resumed from the record of iterations 0..3, iteration 4 proposes what the uninterrupted run proposed
    propose = proposals.random_proposals if strategy == "random" else proposals.evolution_proposals
    resumed = propose(7, 4, [dict(entry) for entry in history if entry["iteration"] < 4], K, OP_SET,
                      num_blocks=BLOCKS)
    assert [g.to_json() for g in resumed] == [e["genotype"] for e in history if e["iteration"] == 4]
    assert _run(strategy, seed=8, iterations=6)[1] != history


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_no_genotype_is_proposed_twice_in_a_run(strategy):
    for seed in range(5):
        _, history = _run(strategy, seed)
        digests = [space.Genotype.from_json(entry["genotype"]).digest() for entry in history]
        assert len(set(digests)) == len(digests)


def test_random_avoids_a_history_even_in_a_tiny_space():
    # 1 block over 7 operations and 2 states: 14*14 encodings per cell, so repeats would be likely
    history = []
    for iteration in range(6):
        for genotype in proposals.random_proposals(0, iteration, history, 5, OP_SET, num_blocks=1):
            history.append(proposals.history_entry(iteration, genotype, 0.0))
    digests = [space.Genotype.from_json(entry["genotype"]).digest() for entry in history]
    assert len(set(digests)) == len(digests) == 30


def test_fitness_is_the_rank_within_its_iteration():
    g = space.NASNET_A
    history = [proposals.history_entry(0, g, 3.0), proposals.history_entry(0, g, 1.0),
               proposals.history_entry(0, g, 2.0), proposals.history_entry(1, g, 0.5),
               proposals.history_entry(1, g, 0.1)]
    assert proposals.iteration_ranks(proposals.parse_history(history)) == [1.0, 0.0, 0.5, 1.0, 0.0]


def test_a_missing_or_nan_selection_loss_ranks_last_in_evolution():
    g = space.NASNET_A
    history = [proposals.history_entry(0, g, 2.0), proposals.history_entry(0, g, 1.0),
               proposals.history_entry(0, g, float("nan")),
               {**proposals.history_entry(0, g, 0.0), "selection_loss": None}]
    ranks = proposals.iteration_ranks(proposals.parse_history(history))
    assert ranks[:2] == [1.0, 0.0] and all(np.isnan(ranks[2:]))
    rng = np.random.default_rng(0)
    scored, unscored = space.sample(rng, OP_SET, BLOCKS), space.sample(rng, OP_SET, BLOCKS)
    history = [proposals.history_entry(0, scored, 5.0), {**proposals.history_entry(0, unscored, 0.0),
                                                         "selection_loss": None}]
    # a tournament of 2 (with replacement) holds the scored candidate 3 times in 4, and then must pick it
    from_scored = sum(_pairs_apart(child, scored) == 1 for seed in range(200) for child in
                      proposals.evolution_proposals(seed, 1, history, 1, OP_SET, population=2, tournament=2,
                                                    num_blocks=BLOCKS))
    assert 125 < from_scored < 175, from_scored


def _pairs_apart(a, b) -> int:
    """How many (operation, state) pairs differ between two encodings of the same shape."""
    return sum(pa != pb for ca, cb in zip(a.cells, b.cells) for ba, bb in zip(ca.blocks, cb.blocks)
               for pa, pb in zip(ba, bb))


def test_ensemble_parents_are_the_current_members():
    rng = np.random.default_rng(1)
    history = [proposals.history_entry(i // 4, space.sample(rng, OP_SET, BLOCKS), float(i)) for i in range(12)]
    members = [space.Genotype.from_json(history[1]["genotype"]), space.Genotype.from_json(history[6]["genotype"])]
    # as the engine may pass them: a Genotype, a JSON string, and a member without a genotype
    ensemble = [members[0], members[1].to_json(), None]
    children = proposals.evolution_proposals(0, 3, history, 40, OP_SET, num_blocks=BLOCKS, parents="ensemble",
                                             ensemble=ensemble)
    nearest_member = [min(range(2), key=lambda m: _pairs_apart(child, members[m])) for child in children]
    assert all(_pairs_apart(child, members[m]) == 1 for child, m in zip(children, nearest_member))
    assert set(nearest_member) == {0, 1}  # both members are drawn
    # no searched member (iteration 0, or members outside the operation set): the tournament decides
    tournament = proposals.evolution_proposals(0, 3, history, 4, OP_SET, num_blocks=BLOCKS)
    for empty in (None, [], [None], [space.NASNET_A]):
        assert proposals.evolution_proposals(0, 3, history, 4, OP_SET, num_blocks=BLOCKS, parents="ensemble",
                                             ensemble=empty) == tournament


def test_the_distance_distribution_is_exact():
    objective = synthetic.SyntheticObjective(3, OP_SET, 1)
    pmf = objective.distance_pmf()
    assert pmf.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    draws = [objective.distance(space.sample(rng, OP_SET, 1)) for _ in range(4000)]
    empirical = np.bincount(draws, minlength=len(pmf)) / len(draws)
    assert np.abs(empirical - pmf).max() < 0.03
    assert objective.distance(objective.target) == 0


@pytest.mark.parametrize("call, message", [
    (lambda: proposals.random_proposals(0, 0, [], 0, "darts"), "candidates per iteration must be an integer >= 1; got 0"),
    (lambda: proposals.random_proposals(0, 0, [], 2, "dart"), "unknown operation set 'dart'.*valid: nasnet"),
    (lambda: proposals.evolution_proposals(0, 0, [], 2, "darts", population=4, tournament=5),
     "tournament 5 is larger than the population 4; valid: 1..4"),
    (lambda: proposals.evolution_proposals(0, 0, [], 2, "darts", population=0), "population must be"),
    (lambda: proposals.evolution_proposals(0, 0, [], 2, "darts", parents="ensembel"),
     r"unknown parents 'ensembel'; did you mean ensemble\? valid: tournament, ensemble"),
    (lambda: proposals.random_proposals(-1, 0, [], 2, "darts"), "seed must be a non-negative integer; got -1"),
    (lambda: proposals.random_proposals(0, 0, [{"iteration": 0}], 2, "darts"), "history entry 0 needs"),
    (lambda: proposals.random_proposals(0, 0, [{"iteration": 0, "genotype": "{", "selection_loss": 1}], 2, "darts"),
     "not valid JSON"),
])
def test_bad_input_gives_one_line_usage_errors(call, message):
    with pytest.raises(UsageError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
