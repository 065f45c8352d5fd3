"""Architecture search through the real loop, on tiny NASNets over the offline digits.

Each strategy, killed mid-iteration and rerun, proposes exactly the genotypes an uninterrupted run with the same seed
proposes (issue 14: the record reloads from the run directory, the controller's weights and optimizer from the last
finished iteration). The record reaches report.json, report.md, TensorBoard and `improve-nas arch`.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from toy_engine import Interrupt

from improve_nas.adanet import RunDirectory, grow_ensemble
from improve_nas.data import load_dataset
from improve_nas.experiment import experiment
from improve_nas.presets import resolve_config
from improve_nas.search.space import Genotype

pytestmark = pytest.mark.slow
SEED = 11
# Two iterations of 4 steps, 2 candidates each; no reduction cells (a reduction cell only adds tracing time here).
TINY = dict(num_cells=3, num_conv_filters=2, num_reduction_layers=0, boosting_iterations=2, num_blocks=3,
            candidates_per_iteration=2, population=4, tournament=2, evaluator_steps=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(generator: str, **hparams):
    values = {**TINY, "generator": generator, **hparams}
    return resolve_config(preset="search_digits", flags=dict(train_steps=8, save_checkpoints_steps=2, eval_steps=2),
                          hparams=",".join(f"{k}={v}" for k, v in values.items()))


def _grow(path, digits, generator, make_callbacks=None):
    config = _config(generator)
    parts = experiment(config, digits, seed=SEED)
    return grow_ensemble(run_dir=RunDirectory(str(path)), settings=dataclasses.replace(parts.settings, verbose=False),
                         generator=parts.generator, data=parts.data, make_preprocessing=parts.make_preprocessing,
                         make_callbacks=make_callbacks)


def _proposed(summaries):
    return [[sub["shared"]["genotype_hash"] for sub in summary["subnetworks"]] for summary in summaries]


@pytest.mark.parametrize("generator", ["random", "evolution", "controller"])
def test_a_killed_search_proposes_on_resume_what_the_killed_run_was_training(tmp_path, digits, generator):
    trained = {}  # iteration -> genotype hashes of the candidates the run trains

    def kill_in_iteration_1(model, iteration, start_step):
        trained[iteration] = [builder.shared()["genotype_hash"] for builder in model.builders]
        return [Interrupt(3)] if iteration == 1 else []  # its last checkpoint is at step 2

    with pytest.raises(KeyboardInterrupt):
        _grow(tmp_path / "run", digits, generator, make_callbacks=kill_in_iteration_1)
    assert RunDirectory(str(tmp_path / "run")).finished_iterations() == [0]
    # A new process would start from nothing but the run directory: a new generator, a cleared Keras session.
    resumed = _grow(tmp_path / "run", digits, generator)
    assert _proposed(resumed) == [trained[0], trained[1]]
    assert len(set(trained[0] + trained[1])) == 4  # never a genotype twice in a run
    for summary in resumed:
        for sub in summary["subnetworks"]:
            Genotype.from_dict(sub["shared"]["genotype"]).check_op_set("nasnet")
            assert sub["selection_loss"] is not None and sub["loss"] is not None
    if generator == "controller":
        state = json.loads((tmp_path / "run" / "iterations" / "1" / "architecture.json").read_text())
        assert state["generator_state"]["controller"]  # weights, optimizer and baseline, restored on resume
