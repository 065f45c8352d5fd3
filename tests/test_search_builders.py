"""The NASNet builder with a genotype: names, the values it shares with later iterations, `with_*` copies, the model
it builds and `improve-nas summary`'s description (improve_nas/search/builders.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from improve_nas.adanet import MemberRecord
from improve_nas.config import HParams
from improve_nas.search import space
from improve_nas.search.builders import NASNetBuilder, describe, format_description

HPARAMS = HParams(knowledge_distillation="none", num_cells=3, num_conv_filters=2)


def builder(genotype=space.NASNET_A, **changes):
    return NASNetBuilder(dataclasses.replace(HPARAMS, **changes), total_training_steps=1, genotype=genotype)


def test_published_genotypes_name_their_builders_and_nasnet_a_keeps_the_original_name():
    assert builder().name == "NasNet_A_1.0_48_cifar"
    assert NASNetBuilder(HPARAMS, total_training_steps=1).name == "NasNet_A_1.0_48_cifar"  # the default
    assert builder(knowledge_distillation="born_again", num_cells=6).name == "NasNet_A_2.0_48_born_again_cifar"
    assert builder(space.AMOEBANET_A).name == "AmoebaNet_A_1.0_48_cifar"
    assert builder(space.DARTS_V2, knowledge_distillation="adaptive").name == "DARTS_V2_1.0_48_adaptive_cifar"


def test_any_other_genotype_is_named_by_its_hash_and_an_equivalent_wiring_by_its_published_name():
    drawn = space.sample(np.random.default_rng(0), "nasnet")
    assert builder(drawn).name == f"Arch_{drawn.digest()[:8]}_1.0_48_cifar"
    normal = space.NASNET_A.normal
    swapped = space.Genotype(space.Cell(tuple((b, a) for a, b in normal.blocks), normal.concat), space.NASNET_A.reduce)
    assert swapped != space.NASNET_A and builder(swapped).name == "NasNet_A_1.0_48_cifar"


@pytest.mark.parametrize("genotype", [space.NASNET_A, space.DARTS_V2])
def test_shared_values_hold_the_size_and_the_genotype_through_json(genotype):
    shared = builder(genotype).shared()
    assert shared == {"num_cells": 3, "num_conv_filters": 2, "genotype": genotype.to_dict(),
                      "genotype_text": genotype.text(), "genotype_hash": genotype.digest()}
    recorded = json.loads(json.dumps(MemberRecord.from_builder(builder(genotype), 0).shared))  # as stored
    assert NASNetBuilder.genotype_of(recorded) == genotype
    assert NASNetBuilder.genotype_of({"num_cells": 3, "num_conv_filters": 2}) == space.NASNET_A  # recorded before


def test_with_architecture_keeps_the_genotype_and_with_genotype_keeps_the_size():
    darts = builder(space.DARTS_V2, weight_decay=1e-3)
    deeper = darts.with_architecture(num_cells=6, num_conv_filters=4)
    assert (deeper.genotype, deeper.hparams.num_cells, deeper.hparams.weight_decay) == (space.DARTS_V2, 6, 1e-3)
    amoeba = deeper.with_genotype(space.AMOEBANET_A)
    assert (amoeba.genotype, amoeba.hparams) == (space.AMOEBANET_A, deeper.hparams)
    assert amoeba.name == "AmoebaNet_A_2.0_96_cifar"
    with pytest.raises(TypeError, match="space.Genotype"):
        NASNetBuilder(HPARAMS, total_training_steps=1, genotype="darts_v2")


def test_from_hparams_resolves_the_genotype_hparam(tmp_path):
    assert NASNetBuilder.from_hparams(HPARAMS, total_training_steps=1).genotype == space.NASNET_A
    path = tmp_path / "cells.json"
    path.write_text(space.AMOEBANET_A.to_json(), encoding="utf-8")
    from_file = NASNetBuilder.from_hparams(dataclasses.replace(HPARAMS, genotype=str(path)), total_training_steps=1)
    assert from_file.genotype == space.AMOEBANET_A


def test_the_built_model_has_the_genotypes_cells():
    model = builder(space.DARTS_V2).build_subnetwork(num_classes=3, input_shape=(8, 8, 1))
    assert model.name == "DARTS_V2_1.0_48_cifar"
    assert (model.normal_genotype, model.reduction_genotype) == space.DARTS_V2.to_cell_genotypes()


def test_summary_describes_the_genotype_hparams_network():
    darts = describe(dataclasses.replace(HPARAMS, genotype="darts_v2"), num_classes=3, image_shape=(8, 8, 1))
    nasnet_a = describe(HPARAMS, num_classes=3, image_shape=(8, 8, 1))
    assert (darts["name"], nasnet_a["name"]) == ("DARTS_V2_1.0_48_cifar", "NasNet_A_1.0_48_cifar")
    assert space.Genotype.from_dict(darts["genotype"]) == space.DARTS_V2
    assert darts["genotype_hash"] == space.DARTS_V2.digest()
    assert darts["stages"][-2]["output_shape"] == [2, 2, 4 * 8]  # the last normal cell: DARTS' 4 states of 4F
    assert nasnet_a["stages"][-2]["output_shape"] == [2, 2, 6 * 8]
    assert darts["trainable_params"] < nasnet_a["trainable_params"]
    assert format_description(darts).splitlines()[1] == f"cells: {space.DARTS_V2.text()}"
    json.dumps(darts)
