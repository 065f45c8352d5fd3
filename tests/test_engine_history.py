"""The record of every candidate the loop trained, which it hands to generators that ask for it."""

from __future__ import annotations

import math

import pytest
from toy_engine import Interrupt, Scale, WidthBuilder, grow, settings, toy_data

from improve_nas.adanet import CandidateRecord, Generator, RunDirectory, grow_ensemble

pytestmark = pytest.mark.multibackend


class HistoryGenerator(Generator):
    """Two widths per iteration, picked from the record: a deterministic function of the history it is handed."""

    def __init__(self):
        self.seen = {}  # iteration -> the history it was handed

    def generate_candidates(self, previous_ensemble, iteration, history=()):
        self.seen[iteration] = list(history)
        # Depends on every earlier record's selection loss, so a record that differs on resume changes the widths.
        offset = sum(int(1000 * r.selection_loss) % 3 for r in history)
        return [WidthBuilder(4 + offset), WidthBuilder(6 + 2 * offset)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 3-iteration run of HistoryGenerator: (its path, its summaries, the generator), read by the tests below."""
    path, generator = tmp_path_factory.mktemp("recorded") / "run", HistoryGenerator()
    return path, grow(path, generator=generator), generator


def test_every_candidate_is_recorded_and_handed_to_the_next_iterations(recorded):
    path, summaries, generator = recorded
    records = [CandidateRecord.from_dict(entry) for s in summaries for entry in s["subnetworks"]]
    assert [r.iteration for r in records] == [0, 0, 1, 1, 2, 2]
    for summary in summaries:
        ensembles = {c["name"]: c["selection_loss"] for c in summary["candidates"]}
        for entry in summary["subnetworks"]:
            # grow: candidate ensemble `t{t}_{builder}_grow` is the one holding the new subnetwork
            assert entry["selection_loss"] == ensembles[f"{entry['name']}_grow"]
            assert 0.0 <= entry["accuracy"] <= 1.0 and math.isfinite(entry["loss"]) and entry["loss"] > 0
            assert entry["params"] == 16 * entry["shared"]["width"] + entry["shared"]["width"] + (
                entry["shared"]["width"] * 3 + 3)
            assert entry["train_seconds"] == summary["train_seconds"]
        assert [e["name"] for e in summary["subnetworks"] if e["chosen"]] == [summary["members"][-1]]
        chosen = next(e for e in summary["subnetworks"] if e["chosen"])
        assert chosen["selection_loss"] == min(e["selection_loss"] for e in summary["subnetworks"])
    assert [len(generator.seen[t]) for t in range(3)] == [0, 2, 4]
    assert generator.seen[2] == records[:4]
    assert RunDirectory(str(path)).candidate_history(3) == records


def test_a_run_killed_mid_iteration_proposes_on_resume_what_an_uninterrupted_run_proposes(recorded, tmp_path):
    reference = recorded[1][:2]  # num_iterations only ends the loop: a 2-iteration run is the first 2 of these
    kill = {"iteration": 1, "after": 3}

    def interrupting(model, iteration, start_step):
        return [Interrupt(kill["after"])] if iteration == kill["iteration"] else []

    with pytest.raises(KeyboardInterrupt):
        grow_ensemble(run_dir=RunDirectory(str(tmp_path / "run")), settings=settings(num_iterations=2),
                      generator=HistoryGenerator(),
                      data=toy_data(), make_preprocessing=lambda seed: Scale(),
                      make_callbacks=interrupting)
    resumed = grow(tmp_path / "run", generator=HistoryGenerator(), num_iterations=2)
    assert [[e["name"] for e in s["subnetworks"]] for s in resumed] == [
        [e["name"] for e in s["subnetworks"]] for s in reference]
    builders = [sorted(e["builder_name"] for e in s["subnetworks"]) for s in reference]
    assert builders[1] != builders[0]  # the record changed the proposals, so the comparison means something


def test_without_an_evaluator_pass_the_record_says_so(tmp_path):
    summaries = grow(tmp_path / "run", num_iterations=1)  # one candidate: selection evaluates nothing
    (entry,) = summaries[0]["subnetworks"]
    assert entry["selection_loss"] is None and entry["loss"] is None and entry["accuracy"] is None
    assert entry["chosen"] and entry["params"] == summaries[0]["member_params"][entry["name"]]
