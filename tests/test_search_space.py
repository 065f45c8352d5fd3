"""The search space as data (improve_nas.search.space): validity of samples and mutations over thousands of seeded
draws, the canonical hash, the JSON and text forms, and the published genotypes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from improve_nas.errors import UsageError
from improve_nas.models import genotype as models_genotype
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
    assert set(models_genotype.KNOWN_OPERATIONS) <= set(space.OP_SETS["nasnet"])
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
    with pytest.raises(UsageError, match="operation dil_separable_3x3 has no layer yet"):
        space.DARTS_V2.to_cell_genotypes()
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
