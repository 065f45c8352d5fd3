"""Keras callbacks of the iteration loop: a progress bar across fit chunks, and the checkpoint clock."""

from __future__ import annotations

import time

import keras


class IterationProgress(keras.callbacks.Callback):
    """One progress bar for the whole iteration, even when `fit` runs in several chunks.

    Shows the step within the iteration and the per-candidate losses the iteration model tracks.
    """

    def __init__(self, *, iteration: int, total_steps: int, start_step: int, verbose: bool = True):
        super().__init__()
        self._bar = keras.utils.Progbar(total_steps, verbose=1 if verbose else 0, unit_name="step")
        self._step = start_step
        self._verbose = verbose
        if verbose and start_step:
            print(f"iteration {iteration}: resuming at step {start_step}/{total_steps}", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        values = [(name, float(value)) for name, value in (logs or {}).items() if name.endswith("loss")]
        self._bar.update(self._step, values=values, finalize=False)

    def close(self):
        if self._verbose:
            self._bar.update(self._step, finalize=True)


class StopEvery(keras.callbacks.Callback):
    """Ends the current `fit` call after `seconds` of training, so the loop can write a checkpoint."""

    def __init__(self, seconds: float):
        super().__init__()
        self._seconds = seconds
        self._start = time.monotonic()

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._start >= self._seconds:
            self.model.stop_training = True
