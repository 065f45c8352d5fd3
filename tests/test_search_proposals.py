"""Search strategies (improve_nas.search.proposals) on the synthetic objective: determinism in (seed, history),
no repeats, bad input, and evidence that evolution searches (it beats random, which matches its analytic
expectation) over 50 seeds."""

from __future__ import annotations

import numpy as np
import pytest

from improve_nas.errors import UsageError
from improve_nas.search import proposals, space, synthetic

OP_SET, BLOCKS, ITERATIONS, K, SEEDS = "darts", 3, 15, 4, range(50)


def _run(strategy, seed, iterations=ITERATIONS, k=K):
    objective = synthetic.SyntheticObjective(seed, OP_SET, BLOCKS)
    propose = proposals.random_proposals if strategy == "random" else proposals.evolution_proposals
    history = []
    for iteration in range(iterations):
        for genotype in propose(seed, iteration, history, k, OP_SET, num_blocks=BLOCKS):
            history.append(proposals.history_entry(iteration, genotype, objective.loss(genotype, iteration)))
    best = min(objective.distance(space.Genotype.from_json(entry["genotype"])) for entry in history)
    return best, objective, history


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_proposals_are_a_function_of_seed_and_history(strategy):
    _, _, history = _run(strategy, seed=7, iterations=6)
    again = _run(strategy, seed=7, iterations=6)[2]
    assert again == history
    # resumed from the record of iterations 0..3, iteration 4 proposes what the uninterrupted run proposed
    propose = proposals.random_proposals if strategy == "random" else proposals.evolution_proposals
    resumed = propose(7, 4, [dict(entry) for entry in history if entry["iteration"] < 4], K, OP_SET,
                      num_blocks=BLOCKS)
    assert [g.to_json() for g in resumed] == [e["genotype"] for e in history if e["iteration"] == 4]
    assert _run(strategy, seed=8, iterations=6)[2] != history


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_no_genotype_is_proposed_twice_in_a_run(strategy):
    for seed in range(5):
        _, _, history = _run(strategy, seed)
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


def test_evolution_reaches_a_lower_mean_regret_than_random_which_matches_its_analytic_expectation():
    random_best, evolution_best, expected, variance = [], [], [], []
    for seed in SEEDS:
        best, objective, _ = _run("random", seed)
        random_best.append(best)
        mean, std = objective.expected_best_distance(ITERATIONS * K)
        expected.append(mean)
        variance.append(std ** 2)
        evolution_best.append(_run("evolution", seed)[0])
    tolerance = 3 * np.sqrt(np.sum(variance)) / len(SEEDS)  # 3 standard errors of the mean over the seeds
    assert abs(np.mean(random_best) - np.mean(expected)) < tolerance, (np.mean(random_best), np.mean(expected))
    assert np.mean(evolution_best) < np.mean(random_best) - tolerance, (np.mean(evolution_best),
                                                                        np.mean(random_best))


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
    (lambda: proposals.random_proposals(-1, 0, [], 2, "darts"), "seed must be a non-negative integer; got -1"),
    (lambda: proposals.random_proposals(0, 0, [{"iteration": 0}], 2, "darts"), "history entry 0 needs"),
    (lambda: proposals.random_proposals(0, 0, [{"iteration": 0, "genotype": "{", "selection_loss": 1}], 2, "darts"),
     "not valid JSON"),
])
def test_bad_input_gives_one_line_usage_errors(call, message):
    with pytest.raises(UsageError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
