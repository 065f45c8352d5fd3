"""NASNet with cells other than NASNet-A's: the published AmoebaNet-A and DARTS-V2, and seeded random genotypes of
every operation set (improve_nas.search.space), built, run, trained one step and reloaded from `.keras` files.

Most tests use a 3-cell network (normal, reduction, normal: the cell inputs arrive raw, projected and reduced) so that
many wirings fit in the time of a few large ones; fewer run on JAX, whose eager ops compile per shape.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from tiny_nasnet import images, numpy

from improve_nas.errors import UsageError
from improve_nas.models import NASNet, genotype, summarize
from improve_nas.search import space

pytestmark = pytest.mark.multibackend

ON_JAX = keras.config.backend() == "jax"
X = images()  # [2, 8, 8, 1]
TINY = dict(num_classes=3, num_cells=3, num_conv_filters=2, drop_path_keep_prob=1.0, use_aux_head=False)
# normal, reduction, normal at 8x8, 4x4, 4x4: widths F, 2F, 2F
SMALL = dict(num_classes=3, num_cells=2, num_reduction_layers=1, num_conv_filters=2, drop_path_keep_prob=1.0)
RANDOM_PER_OP_SET = 6 if ON_JAX else 20
RELOADED_PER_OP_SET = 2 if ON_JAX else 5


def cells(genotype_):
    normal, reduction = genotype_.to_cell_genotypes()
    return dict(normal_genotype=normal, reduction_genotype=reduction)


def samples(op_set: str, count: int, seed: int = 0):
    """`count` seeded genotypes of `op_set`, 1 to 5 blocks per cell in turn."""
    rng = np.random.default_rng([seed, sorted(space.OP_SETS).index(op_set)])
    return [space.sample(rng, op_set, num_blocks=1 + i % 5) for i in range(count)]


@pytest.mark.parametrize("name", sorted(space.NAMED_GENOTYPES))
def test_named_genotype_builds_runs_and_trains_one_step(name):
    published = space.NAMED_GENOTYPES[name]
    model = NASNet(**SMALL, **cells(published), weight_decay=1e-4)
    outputs = model(X)
    # The last normal cell (2F per state after one reduction) concatenates the states the genotype names.
    width = len(published.normal.output_states) * 2 * SMALL["num_conv_filters"]
    assert numpy(outputs["logits"]).shape == (2, 3) and numpy(outputs["features"]).shape == (2, width)
    operations = {op for cell in published.cells for op in cell.operations}
    built = {layer.name.split("_", 3)[3] for cell in model.cells for layer in cell.operations}
    assert built == operations  # the genotype's operations, and nothing else

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), run_eagerly=True,
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    before = [numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(X, {"logits": np.array([0, 2])}, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = sum(not np.array_equal(b, numpy(w)) for b, w in zip(before, model.trainable_weights))
    assert changed == len(before)  # every kernel, BN scale and bias took a step


def test_cell_widths_follow_the_output_lists():
    # AmoebaNet-A's normal cell concatenates state 1 (the previous layer) and 3 block states; DARTS-V2 every block.
    for published, normal, reduction in ((space.AMOEBANET_A, 4, 5), (space.DARTS_V2, 4, 4)):
        model = NASNet(**TINY, **cells(published))
        filters = TINY["num_conv_filters"]
        assert [spec.output_channels for spec in model.plan.cells] == [
            normal * filters, reduction * 2 * filters, normal * 2 * filters, reduction * 4 * filters,
            normal * 4 * filters]


@pytest.mark.parametrize("name", ["amoebanet_a", "darts_v2"])
def test_summary_counts_are_the_built_models(name):
    published = space.NAMED_GENOTYPES[name]
    summary = summarize(num_classes=3, image_shape=(16, 16, 3), num_cells=3, num_conv_filters=4, **cells(published))
    model = NASNet(num_classes=3, num_cells=3, num_conv_filters=4, **cells(published))
    model.build((None, 16, 16, 3))
    aux = sum(np.prod(w.shape) for w in model.aux_head.trainable_weights)
    trainable = sum(np.prod(w.shape) for w in model.trainable_weights)
    assert summary["trainable_params"] == trainable - aux
    assert summary["trainable_params_with_aux_head"] == trainable
    nasnet_a = summarize(num_classes=3, image_shape=(16, 16, 3), num_cells=3, num_conv_filters=4)
    assert summary["trainable_params"] != nasnet_a["trainable_params"]  # the cells reached the summary


@pytest.mark.parametrize("op_set", sorted(space.OP_SETS))
def test_random_genotypes_build_run_and_reload_from_a_keras_file(op_set, tmp_path):
    for index, drawn in enumerate(samples(op_set, RANDOM_PER_OP_SET)):
        model = NASNet(**SMALL, **cells(drawn))
        outputs = model(X)
        logits, features = numpy(outputs["logits"]), numpy(outputs["features"])
        width = len(drawn.normal.output_states) * 2 * SMALL["num_conv_filters"]
        assert (logits.shape, features.shape) == ((2, 3), (2, width)), drawn.text()
        assert np.isfinite(logits).all(), drawn.text()
        if index < RELOADED_PER_OP_SET:  # the slow part: a few per set, every block count among them
            path = tmp_path / f"{index}.keras"
            model.save(path)
            loaded = keras.saving.load_model(path)
            assert (loaded.normal_genotype, loaded.reduction_genotype) == drawn.to_cell_genotypes()
            np.testing.assert_allclose(numpy(loaded(X)["logits"]), logits, rtol=1e-5, atol=1e-6,
                                       err_msg=drawn.text())


def test_config_defaults_to_nasnet_a_and_takes_the_dict_form():
    config = NASNet(num_classes=3).get_config()
    assert config["normal_genotype"] == genotype.NASNET_A_NORMAL.to_config()
    assert config["reduction_genotype"] == genotype.NASNET_A_REDUCTION.to_config()
    darts = cells(space.DARTS_V2)
    from_dicts = NASNet(num_classes=3, normal_genotype=darts["normal_genotype"].to_config(),
                        reduction_genotype=darts["reduction_genotype"].to_config())
    assert from_dicts.normal_genotype == darts["normal_genotype"]
    # A config saved before the genotypes were part of it reloads as NASNet-A.
    old = {k: v for k, v in config.items() if k not in ("normal_genotype", "reduction_genotype")}
    assert NASNet.from_config(old).normal_genotype == genotype.NASNET_A_NORMAL


@pytest.mark.parametrize("value, fragment", [
    ({"operations": ["none", "none"]}, "has the keys"),
    ("nasnet_a", "CellGenotype or its config dict"),
])
def test_bad_cell_genotype_is_a_one_line_usage_error(value, fragment):
    with pytest.raises(UsageError, match=fragment) as error:
        NASNet(num_classes=3, normal_genotype=value)
    assert "\n" not in str(error.value)
