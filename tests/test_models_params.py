"""Parameter counts against docs/original_code.md §3.10, and `improve_nas.models.summary`."""

from __future__ import annotations

import math

import pytest

from improve_nas.errors import UsageError
from improve_nas.models import NASNet, format_summary, summarize

pytestmark = pytest.mark.multibackend


def count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


# (num_cells, F, classes) -> trainable params, + aux head, BN moving stats; docs/original_code.md §3.10, verbatim.
SPEC_TABLE = [
    ((18, 32, 10), 3_346_538, 4_978_036, 37_248),
    ((18, 32, 100), 3_415_748, 5_116_456, 37_248),
    ((12, 32, 10), 2_320_618, 3_952_116, 26_496),
    ((6, 32, 10), 1_294_698, 2_926_196, 15_744),
    ((6, 32, 100), 1_363_908, 3_064_616, 15_744),
    ((3, 10, 10), 103_840, 1_701_546, 3_240),
    ((6, 10, 10), 160_400, None, 4_920),
    ((3, 20, 10), 341_470, None, 6_480),
]


@pytest.mark.parametrize("config, trainable, with_aux_head, moving_stats", SPEC_TABLE, ids=lambda v: str(v))
def test_parameter_counts_match_the_spec_exactly(config, trainable, with_aux_head, moving_stats):
    num_cells, filters, classes = config
    model = NASNet(num_classes=classes, num_cells=num_cells, num_conv_filters=filters, use_aux_head=True)
    model.build((None, 32, 32, 3))  # weights only, nothing runs
    aux_head = count(model.aux_head.trainable_weights)
    assert count(model.trainable_weights) - aux_head == trainable
    if with_aux_head is not None:
        assert count(model.trainable_weights) == with_aux_head
    assert count(model.aux_head.trainable_weights) == count(model.trainable_weights) - trainable
    statistics = [w for w in model.non_trainable_weights if w is not model.training_step]
    assert count(statistics) - count(model.aux_head.non_trainable_weights) == moving_stats


def test_without_the_aux_head_the_model_has_only_the_inference_parameters():
    model = NASNet(num_classes=10, use_aux_head=False)
    model.build((None, 32, 32, 3))
    assert model.count_params() == 103_840 + 3_240 + 1  # trainable + BN moving stats + the step counter
    assert count(model.trainable_weights) == 103_840


def test_summary_of_the_defaults():
    summary = summarize(num_classes=10)
    assert summary["trainable_params"] == 103_840
    assert summary["trainable_params_with_aux_head"] == 1_701_546
    assert summary["non_trainable_params"] == 3_240
    stages = summary["stages"]
    assert [row["kind"] for row in stages] == ["stem", "normal", "reduction", "normal", "reduction", "normal", "dense"]
    assert [row["output_shape"] for row in stages] == [
        [32, 32, 30], [32, 32, 60], [16, 16, 80], [16, 16, 120], [8, 8, 160], [8, 8, 240], [10]]
    assert sum(row["params"] for row in stages) == summary["trainable_params"]
    assert sum(row["multiply_adds"] for row in stages) == summary["multiply_adds"]
    # Stem: a 3x3x3x30 kernel at each of 32x32 positions; logits: a 240x10 kernel.
    assert stages[0]["multiply_adds"] == 32 * 32 * 3 * 3 * 3 * 30
    assert stages[-1]["multiply_adds"] == 240 * 10
    table = format_summary(summary)
    assert "103,840" in table and "1,701,546" in table and "reduction_cell_1" in table


def test_summary_scales_multiply_adds_with_the_image_and_handles_no_aux_head():
    small = summarize(num_classes=10, image_shape=(8, 8, 1), num_reduction_layers=1)
    assert small["trainable_params_with_aux_head"] is None
    assert small["stages"][-2]["output_shape"] == [4, 4, 120]
    assert "no aux head" in format_summary(small)
    # Same weights at twice the resolution: 4x the conv multiply-adds, same dense ones.
    large = summarize(num_classes=10, image_shape=(16, 16, 1), num_reduction_layers=1)
    assert large["trainable_params"] == small["trainable_params"]
    convs = [row["multiply_adds"] for row in small["stages"][:-1]]
    assert [row["multiply_adds"] for row in large["stages"][:-1]] == [4 * m for m in convs]


@pytest.mark.parametrize("image_shape", [(32, 32), (0, 32, 3), (32.0, 32, 3)])
def test_summary_rejects_bad_image_shapes(image_shape):
    with pytest.raises(UsageError, match="image_shape"):
        summarize(num_classes=10, image_shape=image_shape)
