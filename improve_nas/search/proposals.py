"""Search strategies as pure functions of (seed, iteration, history): which K genotypes to train next.

History: the record of every candidate trained so far, chosen or not, in the order trained; each entry a plain
dict ``{"iteration": int, "genotype": <Genotype.to_json() string or its dict>, "selection_loss": float | None}``
(other keys are ignored; a None or NaN loss, a candidate not scored or one that diverged, ranks behind every scored
candidate of its iteration). Randomness comes from ``numpy.random.SeedSequence([seed, iteration, stream])`` only, so
a run resumed from its record proposes exactly what an uninterrupted run proposes.

    random      NES-RS (Zaidi et al. 2021; Li & Talwalkar 2019's baseline): K distinct uniform genotypes, none
                trained before in the run.
    evolution   regularized evolution (Real et al. 2019) made ensemble-aware as in NES-RE: population = the last
                P candidates, parents by tournament of S or drawn from the current ensemble's members (NES-RE,
                Zaidi et al. 2021), child = one mutation.
    controller  the NAS-RL / NASNet REINFORCE controller (improve_nas.search.controller, which needs Keras).
"""

from __future__ import annotations

import math

import numpy as np

from improve_nas.errors import UsageError, nearest
from improve_nas.search import space

STRATEGIES = ("random", "evolution", "controller")  # controller: improve_nas.search.controller
# Where evolution's parents come from: a tournament over the population (Real et al. 2019), or the members of the
# current ensemble (NES-RE, Zaidi et al. 2021)
PARENTS = ("tournament", "ensemble")
DEFAULT_POPULATION = 20
DEFAULT_TOURNAMENT = 5
_RANDOM_STREAM, _EVOLUTION_STREAM = 1, 2
_MAX_TRIES = 200  # draws per proposal before accepting a repeat (evolution) or giving up (random)


def _rng(seed: int, iteration: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer; got {seed!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 0:
        raise UsageError(f"iteration must be a non-negative integer; got {iteration!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration), stream]))


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise UsageError(f"candidates per iteration must be an integer >= 1; got {k!r}")
    return int(k)


def parse_history(history) -> list[tuple[int, space.Genotype, float]]:
    """(iteration, genotype, selection loss) per entry, in order (a None loss reads as NaN); a one-line UsageError for
    a malformed entry."""
    parsed = []
    for index, entry in enumerate(history):
        if not isinstance(entry, dict) or not {"iteration", "genotype", "selection_loss"} <= set(entry):
            raise UsageError(f"history entry {index} needs iteration, genotype and selection_loss; got {entry!r:.80}")
        value = entry["genotype"]
        genotype = space.Genotype.from_json(value) if isinstance(value, str) else space.Genotype.from_dict(value)
        try:
            loss = entry["selection_loss"]
            parsed.append((int(entry["iteration"]), genotype, math.nan if loss is None else float(loss)))
        except (TypeError, ValueError):
            raise UsageError(f"history entry {index}: iteration and selection_loss must be numbers; "
                             f"got {entry['iteration']!r}, {entry['selection_loss']!r}") from None
    return parsed


def random_proposals(seed: int, iteration: int, history, k: int, op_set: str,
                     num_blocks: int = space.DEFAULT_NUM_BLOCKS) -> list[space.Genotype]:
    """K distinct genotypes drawn uniformly (`space.sample`), none equivalent to one in the history."""
    k, rng = _check_k(k), _rng(seed, iteration, _RANDOM_STREAM)
    space.op_set(op_set)
    seen = {genotype.digest() for _, genotype, _ in parse_history(history)}
    proposals = []
    for _ in range(_MAX_TRIES * k):
        genotype = space.sample(rng, op_set, num_blocks)
        if genotype.digest() not in seen:
            seen.add(genotype.digest())
            proposals.append(genotype)
            if len(proposals) == k:
                return proposals
    raise UsageError(f"found only {len(proposals)} new genotypes of {k} in operation set {op_set!r} with "
                     f"{num_blocks} blocks; lower candidates per iteration")


def iteration_ranks(parsed) -> list[float]:
    """Each candidate's rank within its own iteration, scaled to [0, 1] (0 = the lowest selection loss).

    Candidates without a finite loss are left out of the ranking and get NaN.
    """
    by_iteration: dict[int, list[int]] = {}
    for index, (iteration, _, loss) in enumerate(parsed):
        if math.isfinite(loss):
            by_iteration.setdefault(iteration, []).append(index)
    ranks = [math.nan] * len(parsed)
    for indices in by_iteration.values():
        ordered = sorted(indices, key=lambda i: (parsed[i][2], i))
        for position, index in enumerate(ordered):
            ranks[index] = position / (len(ordered) - 1) if len(ordered) > 1 else 0.0
    return ranks


def evolution_proposals(seed: int, iteration: int, history, k: int, op_set: str, *,
                        population: int = DEFAULT_POPULATION, tournament: int = DEFAULT_TOURNAMENT,
                        num_blocks: int = space.DEFAULT_NUM_BLOCKS, parents: str = "tournament",
                        ensemble=None) -> list[space.Genotype]:
    """K children by regularized evolution (Real et al. 2019, Algorithm 1), with ensemble-aware fitness.

    - Population: the last `population` candidates of the history (aging: the oldest leave, whatever their
      fitness). Until the history holds `tournament` candidates, proposals are uniform (the paper's random
      initial population, shortened).
    - Fitness: a candidate's rank within its own iteration, scaled to [0, 1]. Its selection loss is the loss of the
      ensemble it would have made with the members chosen before it, which falls as the ensemble grows, so raw
      losses of different iterations are not comparable (a mediocre late candidate would beat every early one);
      the rank compares only candidates that competed for the same ensemble. A candidate without a finite loss is
      the least fit.
    - Parent, `parents="tournament"`: the fittest of `tournament` candidates drawn uniformly with replacement from
      the population (ties: the younger).
      `parents="ensemble"` (NES-RE, Zaidi et al. 2021, *Neural Ensemble Search for Uncertainty Estimation and
      Dataset Shift*, NeurIPS 2021): each parent is drawn uniformly from `ensemble`, the genotypes of the current
      ensemble's members (Genotypes, their JSON strings or dicts; None for a member without one), so the search
      refines what the ensemble already holds. Members outside the operation set, or without a genotype, were not
      searched here and are skipped; while none is left (iteration 0) parents come from the tournament.
    - Child: one `space.mutate_changed` mutation (an operation or a state; the paper's identity mutation only
      spends a training run on a copy), redrawn while it repeats the history or a sibling.

    Published defaults: P=100, S=25 (Real et al. 2019, CIFAR-10), over 20,000 models. Defaults here, P=20 and S=5
    (S/P kept at 1/4), fit runs of 10-30 iterations of a few candidates each.
    """
    k, rng = _check_k(k), _rng(seed, iteration, _EVOLUTION_STREAM)
    space.op_set(op_set)
    for name, value in (("population", population), ("tournament", tournament)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1; got {value!r}")
    if tournament > population:
        raise UsageError(f"tournament {tournament} is larger than the population {population}; "
                         f"valid: 1..{population}")
    if parents not in PARENTS:
        raise UsageError(f"unknown parents {parents!r}; {nearest(str(parents), PARENTS)}valid: {', '.join(PARENTS)}")
    parsed = parse_history(history)
    searched = _searched_members(ensemble, op_set) if parents == "ensemble" else []
    if not searched and len(parsed) < tournament:
        return random_proposals(seed, iteration, history, k, op_set, num_blocks)
    ranks = [rank if math.isfinite(rank) else math.inf for rank in iteration_ranks(parsed)]
    members = list(range(len(parsed)))[-population:]

    def draw_parent() -> space.Genotype:
        if searched:
            return searched[int(rng.integers(len(searched)))]
        drawn = [members[int(i)] for i in rng.integers(len(members), size=tournament)]
        return parsed[min(drawn, key=lambda i: (ranks[i], -i))][1]

    seen = {genotype.digest() for _, genotype, _ in parsed}
    children = []
    for _ in range(k):
        for _ in range(_MAX_TRIES):
            child = space.mutate_changed(draw_parent(), rng, op_set)
            if child.digest() not in seen:
                break
        seen.add(child.digest())
        children.append(child)
    return children


def _searched_members(ensemble, op_set: str) -> list[space.Genotype]:
    """The ensemble's genotypes that can be parents: given, and within the operation set."""
    allowed, members = set(space.op_set(op_set)), []
    for index, value in enumerate(ensemble or ()):
        if value is None:
            continue
        if isinstance(value, str):
            value = space.Genotype.from_json(value)
        elif isinstance(value, dict):
            value = space.Genotype.from_dict(value)
        elif not isinstance(value, space.Genotype):
            raise UsageError(f"ensemble member {index} must be a genotype, its JSON or None; got {value!r:.80}")
        if set(value.normal.operations + value.reduce.operations) <= allowed:
            members.append(value)
    return members


def history_entry(iteration: int, genotype: space.Genotype, selection_loss: float) -> dict:
    """One history record in the plain form the strategies read (JSON-serialisable)."""
    return {"iteration": int(iteration), "genotype": genotype.to_json(), "selection_loss": float(selection_loss)}
