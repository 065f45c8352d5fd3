"""The search space as data (improve_nas.search.space): validity of samples and mutations over thousands of seeded
draws, the canonical hash, the JSON and text forms, and the published genotypes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from improve_nas.errors import UsageError
from improve_nas.models import genotype as models_genotype
from improve_nas.models.architecture import plan_network
from improve_nas.search import space


def _assert_valid(genotype, op_set):
    for cell in genotype.cells:
        for i, block in enumerate(cell.blocks):
            for operation, state in block:
                assert operation in space.OP_SETS[op_set]
                assert 0 <= state < 2 + i
        assert cell.output_states
    space.Cell(genotype.normal.blocks, genotype.normal.concat)  # revalidates


def test_operation_sets_have_the_published_sizes_and_reuse_the_model_spellings():
    assert {name: len(ops) for name, ops in space.OP_SETS.items()} == {"nasnet": 13, "amoeba": 8, "darts": 7}
    assert tuple(space.OPERATIONS) == models_genotype.KNOWN_OPERATIONS
    assert set(space.OP_SETS["nasnet"]) | set(space.OP_SETS["darts"]) == set(models_genotype.KNOWN_OPERATIONS)
    assert all(len(set(ops)) == len(ops) for ops in space.OP_SETS.values())


@pytest.mark.parametrize("op_set", sorted(space.OP_SETS))
def test_samples_and_mutations_are_always_valid(op_set):
    rng = np.random.default_rng(0)
    kinds = set()
    for draw in range(1500):
        genotype = space.sample(rng, op_set, num_blocks=1 + draw % 5)
        _assert_valid(genotype, op_set)
        child = space.mutate(genotype, rng, op_set)
        _assert_valid(child, op_set)
        kinds.add("identity" if child == genotype else "changed")
        changed = space.mutate_changed(genotype, rng, op_set)
        _assert_valid(changed, op_set)
        assert changed.digest() != genotype.digest()
    assert kinds == {"identity", "changed"}


def test_mutations_are_chosen_uniformly_among_the_three():
    rng = np.random.default_rng(1)
    genotype = space.sample(rng, "nasnet")
    identity = sum(space.mutate(genotype, rng, "nasnet") == genotype for _ in range(3000))
    assert 850 < identity < 1150  # about a third


def test_state_mutation_reads_another_earlier_state_and_operation_mutation_another_operation():
    rng = np.random.default_rng(2)
    for _ in range(500):
        parent = space.sample(rng, "darts")
        for kind in ("operation", "state"):
            child = space.mutate(parent, rng, "darts", kind=kind)
            diffs = [(p, c) for pc, cc in zip(parent.cells, child.cells) for pb, cb in zip(pc.blocks, cc.blocks)
                     for p, c in zip(pb, cb) if p != c]
            assert len(diffs) == 1
            (p_op, p_state), (c_op, c_state) = diffs[0]
            assert (p_op != c_op, p_state != c_state) == ((True, False) if kind == "operation" else (False, True))


def test_the_hash_ignores_the_order_of_a_blocks_pairs_and_of_independent_blocks():
    rng = np.random.default_rng(3)
    for _ in range(1000):
        genotype = space.sample(rng, "nasnet")
        cell = genotype.normal
        swapped = space.Cell(tuple((b, a) for a, b in cell.blocks), cell.concat)
        assert space.Genotype(swapped, genotype.reduce).digest() == genotype.digest()
    a = space.Cell(((("none", 0), ("conv_1x1", 1)), (("avg_pool_3x3", 1), ("max_pool_3x3", 0))))
    b = space.Cell(((("avg_pool_3x3", 1), ("max_pool_3x3", 0)), (("none", 0), ("conv_1x1", 1))))
    assert space.Genotype(a, a).digest() == space.Genotype(b, a).digest()
    # a block that reads the other one may not move before it
    c = space.Cell(((("none", 0), ("conv_1x1", 1)), (("avg_pool_3x3", 2), ("max_pool_3x3", 0))))
    d = space.Cell(((("avg_pool_3x3", 1), ("max_pool_3x3", 0)), (("none", 2), ("conv_1x1", 1))))
    assert space.Genotype(c, a).digest() != space.Genotype(d, a).digest()


def test_the_hash_tells_different_wirings_apart():
    rng = np.random.default_rng(4)
    digests, canonical = set(), set()
    for _ in range(2000):
        genotype = space.sample(rng, "nasnet")
        digests.add(genotype.digest())
        canonical.add(genotype.canonical())
    assert len(digests) == len(canonical) > 1990
    assert space.NASNET_A.digest() != space.AMOEBANET_A.digest() != space.DARTS_V2.digest()
    # an explicit output list equal to the default rule is the same wiring; another list is not
    cell = space.sample(rng, "nasnet").normal
    explicit = space.Cell(cell.blocks, cell.output_states)
    assert space.Genotype(explicit, cell).digest() == space.Genotype(cell, cell).digest()
    other = space.Cell(cell.blocks, tuple(range(2, 2 + cell.num_blocks)))
    if other.output_states != cell.output_states:
        assert space.Genotype(other, cell).digest() != space.Genotype(cell, cell).digest()


def test_json_and_text_round_trip():
    rng = np.random.default_rng(5)
    genotypes = [space.sample(rng, name) for name in space.OP_SETS for _ in range(300)]
    for genotype in genotypes + list(space.NAMED_GENOTYPES.values()):
        assert space.Genotype.from_json(genotype.to_json()) == genotype
        assert space.Genotype.from_text(genotype.text()) == genotype
        assert "\n" not in genotype.text()
        json.loads(genotype.to_json())


def test_nasnet_a_is_the_models_nasnet_a():
    assert space.NASNET_A.to_cell_genotypes() == (models_genotype.NASNET_A_NORMAL, models_genotype.NASNET_A_REDUCTION)
    assert space.NASNET_A.text().startswith("normal: [sep5(0)+sep3(1)] [sep5(1)+sep3(1)]")


def test_published_genotypes_validate_in_their_operation_sets():
    space.NASNET_A.check_op_set("nasnet")
    space.AMOEBANET_A.check_op_set("amoeba")
    space.DARTS_V2.check_op_set("darts")
    assert space.DARTS_V2.normal.num_blocks == 4 and space.AMOEBANET_A.reduce.output_states == (2, 3, 4, 5, 6)
    with pytest.raises(UsageError, match="'dil_separable_3x3' is not in operation set 'nasnet'"):
        space.DARTS_V2.check_op_set("nasnet")
    normal, reduction = space.DARTS_V2.to_cell_genotypes()  # every operation has a layer, DARTS' too
    assert normal.num_combinations == 4 and "dil_separable_3x3" in normal.operations
    assert space.named_genotype("amoebanet_a") is space.AMOEBANET_A


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[]", "keys 'normal' and 'reduce'"),
    ('{"normal": {"blocks": []}, "reduce": {"blocks": []}}', "at least one block"),
    ('{"normal": {"blocks": [[["sep3", 0], ["none", 1]]]}, "reduce": {"blocks": [[["none", 0], ["none", 1]]]}}',
     "unknown operation 'sep3'"),
    ('{"normal": {"blocks": [[["none", 2], ["none", 1]]]}, "reduce": {"blocks": [[["none", 0], ["none", 1]]]}}',
     "reads state 2; valid: 0..1"),
    ('{"normal": {"blocks": [[["none", 0]]]}, "reduce": {"blocks": [[["none", 0], ["none", 1]]]}}',
     "two \\(operation, state\\) pairs"),
    ('{"normal": {"blocks": [[["none", 0], ["none", 1]]], "concat": [5]}, '
     '"reduce": {"blocks": [[["none", 0], ["none", 1]]]}}', "concat \\[5\\]"),
    ('{"normal": {"blocks": 3}, "reduce": {"blocks": [[["none", 0], ["none", 1]]]}}', "lists of two"),
])
def test_invalid_json_gives_one_line_usage_errors(text, message):
    with pytest.raises(UsageError, match=message) as error:
        space.Genotype.from_json(text)
    assert "\n" not in str(error.value)


def test_unknown_names_give_one_line_usage_errors_with_the_choices():
    with pytest.raises(UsageError, match="unknown operation set 'nasnt'; did you mean nasnet.*valid: nasnet, amoeba"):
        space.sample(np.random.default_rng(0), "nasnt")
    with pytest.raises(UsageError, match="unknown genotype 'darts'; .*valid: nasnet_a, amoebanet_a, darts_v2"):
        space.named_genotype("darts")
    with pytest.raises(UsageError, match="unknown operation 'sepp3'"):
        space.Genotype.from_text("normal: [sepp3(0)+id(1)] | reduce: [id(0)+id(1)]")
    with pytest.raises(UsageError, match="genotype text must read"):
        space.Genotype.from_text("normal: [sep3(0)+id(1)]")


@pytest.mark.parametrize("op_set", sorted(space.OP_SETS))
def test_every_sampled_genotype_is_a_model_genotype_with_its_wiring(op_set):
    # The model's side of "any wiring the space can produce", without Keras: the cells convert, keep their wiring
    # (same hash back), and lay out a network whose cell widths count the concatenated states.
    rng = np.random.default_rng(6)
    for draw in range(1000):
        genotype = space.sample(rng, op_set, num_blocks=1 + draw % 6)
        normal, reduction = genotype.to_cell_genotypes()
        assert space.Genotype.from_cell_genotypes(normal, reduction).digest() == genotype.digest()
        plan = plan_network(num_cells=3, num_conv_filters=2, stem_multiplier=3.0, filter_scaling_rate=2.0,
                            num_reduction_layers=2, skip_reduction_layer_input=0, drop_path_keep_prob=1.0,
                            normal_genotype=normal, reduction_genotype=reduction)
        assert plan.feature_channels == len(genotype.normal.output_states) * 8


def test_resolve_genotype_takes_a_name_or_a_json_file(tmp_path):
    assert space.resolve_genotype("darts_v2") is space.DARTS_V2
    path = tmp_path / "found.json"
    path.write_text(space.AMOEBANET_A.to_json(), encoding="utf-8")
    assert space.resolve_genotype(str(path)) == space.AMOEBANET_A


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the genotype file {path} \\(No such file or directory\\)"),
    ("{", "genotype file {path}: genotype is not valid JSON"),
    ('{"normal": {"blocks": [[["sep9", 0], ["none", 1]]]}, "reduce": {"blocks": [[["none", 0], ["none", 1]]]}}',
     "genotype file {path}: unknown operation 'sep9'"),
    (b"\xff\xfe", "cannot read the genotype file {path} \\(not UTF-8 text\\)"),
])
def test_resolve_genotype_errors_are_one_line_and_name_the_file(tmp_path, content, message):
    path = tmp_path / "cells.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=message.format(path=re.escape(str(path)))) as error:
        space.resolve_genotype(str(path))
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match="unknown genotype 'dart_v2'; did you mean darts_v2"):
        space.resolve_genotype("dart_v2")
