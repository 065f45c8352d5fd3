"""The `dynamic` generator on plain ensemble records (SPEC_ORIGINAL §2.3), without building or training a NASNet.

Every iteration proposes a deeper (+3 cells) and a wider (+10 filters) NASNet than the member added last, whose
architecture (size and genotype) it reads back from the record's plain JSON values; iteration 0 grows the starting
architecture, whose cells are the hparam `genotype`'s.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from improve_nas.adanet import EnsembleRecord, MemberRecord
from improve_nas.config import HParams
from improve_nas.search import space
from improve_nas.search.builders import NASNetBuilder
from improve_nas.search.generators import make_generator

# the defaults start from 3 cells and 10 filters; the others show that only the architecture changes
HPARAMS = HParams(generator="dynamic", knowledge_distillation="none", weight_decay=1e-4)


def record(iteration, *architectures, genotype=space.NASNET_A):
    """The ensemble chosen at the end of `iteration`: one member per (num_cells, num_conv_filters), the last newest,
    as the engine stores it (through JSON)."""
    members = [MemberRecord.from_builder(NASNetBuilder(dataclasses.replace(HPARAMS, num_cells=c, num_conv_filters=f),
                                                       total_training_steps=1, genotype=genotype), i)
               for i, (c, f) in enumerate(architectures)]
    chosen = EnsembleRecord(name=f"t{iteration}_ensemble", iteration=iteration, members=members,
                            ensembler={"class_name": "MeanEnsembler", "config": {}})
    return EnsembleRecord.from_json(chosen.to_json())


def architectures(builders):
    """(name, size) of each builder, where every shared genotype is NASNet-A's."""
    for builder in builders:
        assert builder.shared()["genotype"] == space.NASNET_A.to_dict()
        assert builder.shared()["genotype_hash"] == space.NASNET_A.digest()
    return [(b.name, {key: b.shared()[key] for key in ("num_cells", "num_conv_filters")}) for b in builders]


def test_iteration_0_proposes_a_deeper_and_a_wider_starting_architecture():
    builders = make_generator(HPARAMS, iteration_steps=100).generate_candidates(None, 0)
    assert architectures(builders) == [
        ("NasNet_A_2.0_240_cifar", {"num_cells": 6, "num_conv_filters": 10}),
        ("NasNet_A_1.0_480_cifar", {"num_cells": 3, "num_conv_filters": 20}),
    ]
    # only the architecture changes: every other hyperparameter is the run's
    assert [b.hparams for b in builders] == [dataclasses.replace(HPARAMS, num_cells=6),
                                             dataclasses.replace(HPARAMS, num_conv_filters=20)]


@pytest.mark.parametrize("previous, deeper, wider", [
    (record(0, (6, 10)), (9, 10), (6, 20)),                      # the deeper one won iteration 0
    (record(0, (3, 20)), (6, 20), (3, 30)),                      # the wider one won iteration 0
    (record(1, (3, 20), (6, 20)), (9, 20), (6, 30)),              # grows from the last member, not the first
    (record(2, (3, 20), (3, 30), (6, 10)), (9, 10), (6, 20)),     # nor from the largest
])
def test_later_iterations_grow_the_member_added_last(previous, deeper, wider):
    builders = make_generator(HPARAMS, iteration_steps=100).generate_candidates(previous, previous.iteration + 1)
    assert [(b.shared()["num_cells"], b.shared()["num_conv_filters"]) for b in builders] == [deeper, wider]
    assert all(b.genotype == space.NASNET_A for b in builders)
    assert [b.name for b in builders] == [f"NasNet_A_{c / 3}_{f * 24}_cifar" for c, f in (deeper, wider)]
    assert all(b.hparams == dataclasses.replace(HPARAMS, num_cells=b.hparams.num_cells,
                                                num_conv_filters=b.hparams.num_conv_filters) for b in builders)


def test_an_empty_previous_ensemble_grows_the_starting_architecture():
    generator = make_generator(HPARAMS, iteration_steps=100)
    empty = EnsembleRecord(name="t0_empty", iteration=0, members=(), ensembler={})
    assert architectures(generator.generate_candidates(empty, 1)) == architectures(
        generator.generate_candidates(None, 0))


def test_state_round_trips_and_a_restored_generator_proposes_the_same_candidates():
    # The engine stores state_dict() (JSON) with every finished iteration and rebuilds earlier members on resume by
    # asking a new generator again: its proposals must depend on the record and the iteration only.
    generator = make_generator(HPARAMS, iteration_steps=100)
    previous = record(1, (3, 20), (6, 20))
    state = json.loads(json.dumps(generator.state_dict()))
    restored = make_generator(HPARAMS, iteration_steps=100)
    restored.load_state_dict(state)
    assert restored.state_dict() == generator.state_dict() == state
    assert architectures(restored.generate_candidates(previous, 2)) == architectures(
        generator.generate_candidates(previous, 2))
    with pytest.raises(ValueError, match="stateless"):
        restored.load_state_dict({"num_cells": 9})


def test_the_simple_generator_proposes_the_starting_architecture_every_iteration():
    simple = dataclasses.replace(HPARAMS, generator="simple")
    generator = make_generator(simple, iteration_steps=100)
    for previous, iteration in ((None, 0), (record(1, (3, 10), (3, 10)), 2)):
        assert architectures(generator.generate_candidates(previous, iteration)) == [
            ("NasNet_A_1.0_240_cifar", {"num_cells": 3, "num_conv_filters": 10})]


def test_the_starting_cells_are_the_hparam_genotype():
    darts = dataclasses.replace(HPARAMS, genotype="darts_v2")
    builders = make_generator(darts, iteration_steps=100).generate_candidates(None, 0)
    assert [b.name for b in builders] == ["DARTS_V2_2.0_240_cifar", "DARTS_V2_1.0_480_cifar"]
    assert all(b.shared()["genotype"] == space.DARTS_V2.to_dict() for b in builders)
    simple = make_generator(dataclasses.replace(darts, generator="simple"), iteration_steps=100)
    assert [b.genotype for b in simple.generate_candidates(None, 0)] == [space.DARTS_V2]


def test_later_iterations_keep_the_genotype_of_the_member_added_last():
    # The run's hparam says DARTS-V2, the last member is AmoebaNet-A: the member's cells win.
    generator = make_generator(dataclasses.replace(HPARAMS, genotype="darts_v2"), iteration_steps=100)
    builders = generator.generate_candidates(record(0, (3, 10), genotype=space.AMOEBANET_A), 1)
    assert [b.name for b in builders] == ["AmoebaNet_A_2.0_240_cifar", "AmoebaNet_A_1.0_480_cifar"]
    assert all(space.Genotype.from_dict(b.shared()["genotype"]) == space.AMOEBANET_A for b in builders)


def test_a_member_recorded_without_a_genotype_was_nasnet_a():
    # Records written before genotypes were shared hold only the size.
    previous = record(0, (3, 10), genotype=space.DARTS_V2)
    old = dataclasses.replace(previous.members[0], shared={"num_cells": 3, "num_conv_filters": 10})
    previous = dataclasses.replace(previous, members=(old,))
    builders = make_generator(dataclasses.replace(HPARAMS, genotype="darts_v2"), iteration_steps=100) \
        .generate_candidates(previous, 1)
    assert [b.genotype for b in builders] == [space.NASNET_A, space.NASNET_A]


def test_the_searching_generators_are_the_ones_the_config_counts_k_candidates_for():
    from improve_nas import choices
    from improve_nas.search.generators import SEARCH_GENERATORS

    assert tuple(SEARCH_GENERATORS) == choices.SEARCHING_GENERATORS
