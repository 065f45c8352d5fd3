"""Inference in large, equal, memory-bounded chunks: same outputs for any chunk size, halving on out-of-memory."""

from __future__ import annotations

import numpy as np
import pytest

from improve_nas.adanet.runtime.evaluation import evaluate
from improve_nas.adanet.runtime.inference import BatchedPredictor, chunk_size, is_out_of_memory

pytestmark = pytest.mark.multibackend

ROWS = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)


class ResourceExhaustedError(RuntimeError):
    """Named like TensorFlow's: matched by name, as the real one is."""


class RecordingModel:
    """`predict_on_batch` of a model whose outputs are functions of each row; records the batch sizes it got and
    runs out of memory above `memory_rows`."""

    def __init__(self, memory_rows: int | None = None, error: type[Exception] = ResourceExhaustedError):
        self.memory_rows, self.error, self.sizes = memory_rows, error, []

    def predict_on_batch(self, x):
        self.sizes.append(len(x))
        if self.memory_rows is not None and len(x) > self.memory_rows:
            raise self.error(f"OOM when allocating tensor for {len(x)} rows")
        logits = np.stack([x.sum(axis=1), -x.sum(axis=1), x[:, 0]], axis=1)
        return {"logits": logits, "members": {"a": logits * 2.0, "b": logits - 1.0}}


@pytest.mark.parametrize("rows, cap, multiple_of, expected", [
    (360, 128, 1, 120),   # 3 equal chunks instead of 128, 128 and a padded 104
    (1437, 128, 1, 120),  # 12 chunks, 3 padding rows
    (100, 1024, 1, 100),  # one chunk: the whole partition
    (10, 4, 3, 3),        # the cap rounded down to the devices' multiple: 4 chunks of 3
    (10, 2, 4, 4),        # at least one row per device
])
def test_chunk_sizes_are_equal_and_bounded(rows, cap, multiple_of, expected):
    size = chunk_size(rows, cap, multiple_of)
    assert size == expected and size % multiple_of == 0
    assert size <= max(cap, multiple_of) and size * -(-rows // size) - rows < size


def test_any_chunk_size_gives_every_row_once_in_order_with_one_input_shape():
    expected = RecordingModel().predict_on_batch(ROWS)
    for cap in (1, 3, 4, 10, 64):
        model = RecordingModel()
        outputs = BatchedPredictor(cap)(model, ROWS)
        np.testing.assert_array_equal(outputs["logits"], expected["logits"])
        np.testing.assert_array_equal(outputs["members"]["b"], expected["members"]["b"])
        assert len(set(model.sizes)) == 1  # the last chunk is padded: one trace / one compilation
        assert model.sizes[0] == chunk_size(len(ROWS), cap)


@pytest.mark.parametrize("error", [ResourceExhaustedError, MemoryError])
def test_out_of_memory_halves_the_chunk_and_remembers_it(error):
    messages = []
    predict = BatchedPredictor(8, on_shrink=messages.append)
    model = RecordingModel(memory_rows=3, error=error)
    outputs = predict(model, ROWS)
    np.testing.assert_array_equal(outputs["logits"], RecordingModel().predict_on_batch(ROWS)["logits"])
    assert model.sizes[:3] == [5, 2, 2]  # 2 chunks of 5, then halved (5 // 2)
    assert predict.max_batch_size == 2
    assert messages == ["inference on 5 images at once ran out of memory; continuing with 2 "
                        "(--inference_batch_size sets the starting size)"]
    model.sizes.clear()
    predict(model, ROWS)
    assert set(model.sizes) == {2}  # the next pass starts at the size that fit


def test_pick_keeps_only_part_of_each_chunk():
    outputs = BatchedPredictor(4)(RecordingModel(), ROWS, pick=lambda out: out["members"]["a"])
    np.testing.assert_array_equal(outputs, RecordingModel().predict_on_batch(ROWS)["members"]["a"])


def test_out_of_memory_at_one_row_and_other_errors_propagate():
    with pytest.raises(ResourceExhaustedError):
        BatchedPredictor(4)(RecordingModel(memory_rows=0), ROWS)
    with pytest.raises(ValueError, match="OOM"):
        BatchedPredictor(4)(RecordingModel(memory_rows=1, error=ValueError), ROWS)


def test_out_of_memory_is_recognised_on_both_backends_without_importing_them():
    assert is_out_of_memory(ResourceExhaustedError("x"))  # TensorFlow's class name
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))  # XLA
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("INVALID_ARGUMENT: shapes"))


def test_evaluate_is_independent_of_the_chunk_size():
    labels = np.array([0, 1, 2] * 3 + [0])
    results = [evaluate(RecordingModel(), ROWS, labels, predict=BatchedPredictor(cap)) for cap in (3, 7, 100)]
    assert results[0]["examples"] == 10 and set(results[0]["members"]) == {"a", "b"}
    for result in results[1:]:
        assert result["ensemble"]["accuracy"] == results[0]["ensemble"]["accuracy"]
        assert result["members"]["b"]["loss"] == pytest.approx(results[0]["members"]["b"]["loss"], rel=1e-12)
    logits = RecordingModel().predict_on_batch(ROWS)["logits"].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    assert results[0]["ensemble"]["loss"] == pytest.approx(-log_probs[np.arange(10), labels].mean(), rel=1e-9)
    assert results[0]["ensemble"]["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
