"""The candidate pool of an iteration: every candidate subnetwork it trained, chosen or not, kept for later use.

    iterations/<t>/pool/<name>.keras   an unchosen candidate (a chosen one is iterations/<t>/members/<name>.keras)
    iterations/<t>/pool/logits.npz     compressed: "<name>/selection" and "<name>/test" (float16 [rows, K]) of every
                                       candidate, "labels/selection" and "labels/test" (int32 [rows]) and
                                       "rows/selection" and "rows/test" (the row counts)

The logits are each candidate's own (no ensembling), on the rows selection reads and the rows evaluation reads, so an
ensemble of any subset can be scored without running a model (`improve_nas.ensemble_selection`). Written into the
iteration's staging directory, the pool is published with it, whole or not at all, and its manifest covers it.

Numpy only here: reading a pool starts no Keras backend.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

POOL = "pool"
LOGITS = "logits.npz"
PARTS = ("selection", "test")


@dataclasses.dataclass(frozen=True)
class Pool:
    """The candidates' own logits on the selection and test rows, with those rows' labels.

    Attributes:
      names: candidate names, in the iteration's builder order.
      logits: part ("selection" | "test") -> name -> logits [rows, K].
      labels: part -> integer labels [rows].
    """

    names: list[str]
    logits: dict[str, dict[str, np.ndarray]]
    labels: dict[str, np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        """The `logits.npz` entries: float16 logits, int32 labels, int64 row counts."""
        arrays = {}
        for part in PARTS:
            rows = len(self.labels[part])
            arrays[f"labels/{part}"] = np.asarray(self.labels[part]).reshape(-1).astype(np.int32)
            arrays[f"rows/{part}"] = np.int64(rows)
            for name in self.names:
                logits = np.asarray(self.logits[part][name])
                if len(logits) != rows:
                    raise ValueError(f"{name}: {len(logits)} {part} logits for {rows} rows")
                arrays[f"{name}/{part}"] = logits.astype(np.float16)
        return arrays


def write(iteration_dir: str, pool: Pool, unchosen: dict) -> None:
    """Writes `pool`'s logits and the `unchosen` candidates' models (name -> Keras model) under `iteration_dir`."""
    directory = os.path.join(iteration_dir, POOL)
    os.makedirs(directory, exist_ok=True)
    for name, model in unchosen.items():
        model.save(os.path.join(directory, f"{name}.keras"))
    np.savez_compressed(os.path.join(directory, LOGITS), **pool.arrays())


def logits_path(iteration_dir: str) -> str:
    return os.path.join(iteration_dir, POOL, LOGITS)


def read(iteration_dir: str) -> Pool:
    """The pool of one published iteration (float16 logits widened to float32)."""
    with np.load(logits_path(iteration_dir)) as stored:
        keys = list(stored.keys())
        names = [key[:-len("/selection")] for key in keys
                 if key.endswith("/selection") and not key.startswith(("labels/", "rows/"))]
        return Pool(names=names,
                    logits={part: {name: stored[f"{name}/{part}"].astype(np.float32) for name in names}
                            for part in PARTS},
                    labels={part: stored[f"labels/{part}"].astype(np.int64) for part in PARTS})
