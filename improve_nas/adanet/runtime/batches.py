"""Minibatches as a pure function of (seed, step), so a resumed iteration sees exactly the batches it would have.

Training walks through a fresh random permutation of the partition every epoch (sampling without replacement, as a
full shuffle would); batch k of an iteration covers positions [k·B, (k+1)·B) of the concatenated permutations, so
`train_batches(..., start_step=k)` continues an interrupted iteration with batch k. (Selection and evaluation read
whole partitions in order: `inference.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class EpochPermutations:
    """The permutation of every epoch, derived from `(seed, epoch)` alone; the last two are cached."""

    def __init__(self, size: int, seed: int):
        if size <= 0:
            raise ValueError("cannot draw batches from an empty partition")
        self.size = size
        self._seed = seed
        self._cache: dict[int, np.ndarray] = {}

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = np.random.default_rng([self._seed, epoch]).permutation(self.size)
        return self._cache[epoch]

    def indices(self, step: int, batch_size: int, steps: int = 1) -> np.ndarray:
        """Rows of batches `step .. step + steps - 1`, concatenated."""
        positions = np.arange(step * batch_size, (step + steps) * batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(positions, self.size)
        return np.concatenate([self(int(epoch))[offsets[epochs == epoch]] for epoch in np.unique(epochs)])


def train_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int, start_step: int = 0
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless training batches `(images, labels)` starting with batch `start_step`."""
    permutations = EpochPermutations(len(images), seed)
    step = start_step
    while True:
        rows = permutations.indices(step, batch_size)
        yield images[rows], labels[rows]
        step += 1


def train_rows(size: int, *, batch_size: int, seed: int, start_step: int, steps: int) -> np.ndarray:
    """The rows of training batches `start_step .. start_step + steps - 1`, int32 `[steps * batch_size]`: batch k
    holds the rows whose images and labels `train_batches` yields as batch k (for data kept on the device)."""
    return EpochPermutations(size, seed).indices(start_step, batch_size, steps).astype(np.int32)
