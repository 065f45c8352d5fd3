"""Inference over a whole partition, in batches as large as memory allows (selection and test evaluation).

How many rows go through the model per call is a speed setting only: in inference mode each output row depends on its
own input row alone (batch norm reads its moving statistics, augmentation and dropout are off), so any split of the
partition gives the same outputs, up to float rounding. What selection and evaluation compute (which examples, how
losses are averaged) is defined by their own batch sizes and steps, not by this one.

`BatchedPredictor` cuts the rows into equal chunks of at most `max_batch_size` (the last one padded), so the model sees
one input shape per partition: TensorFlow traces and XLA compiles its predict function once, not again for a smaller
last batch, and later iterations reuse it. When a chunk runs out of memory (a device's `RESOURCE_EXHAUSTED`, or the
host's `MemoryError`) the chunk size is halved and the pass goes on from that chunk; the smaller size is kept for the
predictor's later calls, so a run pays for finding it once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import numpy as np

# Where nothing else is said: accelerators start large and halve on out-of-memory; on a CPU larger batches are not
# faster (measured on 2 cores, TensorFlow and JAX: within 10 % from 32 to 1,024 images) and cost host memory.
ACCELERATOR_BATCH_SIZE = 1024
CPU_BATCH_SIZE = 128


def default_inference_batch_size() -> int:
    """The starting chunk size on the device Keras computes on."""
    device = str(keras.distribution.list_devices()[0]).lower()
    return CPU_BATCH_SIZE if device.startswith("cpu") else ACCELERATOR_BATCH_SIZE


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` says an allocation failed: TensorFlow's `ResourceExhaustedError`, XLA's `RESOURCE_EXHAUSTED`
    (JAX), or Python's `MemoryError`. Matched by name, so that neither backend has to be imported."""
    if isinstance(error, MemoryError):
        return True
    return (any(cls.__name__ == "ResourceExhaustedError" for cls in type(error).__mro__)
            or "RESOURCE_EXHAUSTED" in str(error))


def chunk_size(rows: int, max_batch_size: int, multiple_of: int = 1) -> int:
    """The size of the fewest equal chunks covering `rows`, each a multiple of `multiple_of` (the devices sharing a
    batch) and at most `max_batch_size` (or `multiple_of`, if larger): e.g. 360 rows at most 128 at a time are 3
    chunks of 120, where chunks of 128 would pad the last one with 24 rows."""
    cap = max(multiple_of, max_batch_size // multiple_of * multiple_of)
    chunks = math.ceil(rows / cap)
    return math.ceil(math.ceil(rows / chunks) / multiple_of) * multiple_of


class BatchedPredictor:
    """`predictor(model, images)`: every output of `model.predict_on_batch`, for every row of `images`.

    Args:
        max_batch_size: Rows per call at most, before any out-of-memory halving.
        multiple_of: Chunk sizes are multiples of it (the number of devices a batch is split across).
        on_shrink: Called with a one-line message when a chunk ran out of memory and the size was halved.
    """

    def __init__(self, max_batch_size: int, *, multiple_of: int = 1, on_shrink: Callable[[str], None] | None = None):
        if max_batch_size < 1 or multiple_of < 1:
            raise ValueError(f"max_batch_size={max_batch_size} and multiple_of={multiple_of} must be positive")
        self.max_batch_size = max_batch_size
        self.multiple_of = multiple_of
        self._on_shrink = on_shrink or (lambda message: None)

    def __call__(self, model, images: np.ndarray, *, pick: Callable | None = None):
        """Outputs with the structure of `predict_on_batch`'s, as numpy arrays of `len(images)` rows; with `pick`,
        only `pick(outputs)` of each chunk is kept (e.g. the ensembles' logits and not every member's)."""
        pick = pick or (lambda outputs: outputs)
        rows = len(images)
        if rows == 0:
            raise ValueError("inference got no rows")
        parts, start = [], 0
        size = chunk_size(rows, self.max_batch_size, self.multiple_of)
        while start < rows:
            chunk = _padded(images[start:start + size], size)
            try:
                outputs = model.predict_on_batch(chunk)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(error) or size <= self.multiple_of:
                    raise
                smaller = max(self.multiple_of, (size // 2) // self.multiple_of * self.multiple_of)
                self._on_shrink(f"inference on {size} images at once ran out of memory; continuing with {smaller} "
                                f"(--inference_batch_size sets the starting size)")
                self.max_batch_size = size = smaller
                continue
            taken = min(size, rows - start)
            parts.append(keras.tree.map_structure(lambda value: np.asarray(value)[:taken], pick(outputs)))
            start += taken
        return keras.tree.map_structure(lambda *values: np.concatenate(values), *parts)


def _padded(chunk: np.ndarray, size: int) -> np.ndarray:
    if len(chunk) == size:
        return chunk
    padding = np.zeros((size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
    return np.concatenate([chunk, padding])
