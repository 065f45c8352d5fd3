"""Stopping cleanly on SIGTERM, what Vertex AI, GCE and Kubernetes send before they preempt or stop a machine.

The default action of SIGTERM kills the process at once, losing every step since the last checkpoint. While a
`PreemptionGuard` is active, SIGTERM only raises a flag (a signal handler must not do I/O: it may interrupt a
print). Training sees the flag at the end of the current batch (`stop_callback` stops `fit`), the engine writes its
checkpoint as after every `fit` chunk, and the next `raise_if_requested` (called from the engine's `on_write` hook)
prints one line and raises `Preempted`, which exits the process with code 143 (128 + SIGTERM, the code TensorFlow's
own preemption handling uses for "restartable"). Re-running the same command resumes at that checkpoint.

A second SIGTERM while the first is being handled restores the previous handler and re-sends the signal: "stop now"
still works.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import keras

EXIT_CODE = 128 + signal.SIGTERM


class Preempted(SystemExit):
    """The run stopped on SIGTERM after saving its state; re-running the same command resumes it.

    A `SystemExit` so that every entry point exits with `EXIT_CODE` without having to know about it; in-process
    callers can catch it by this class.
    """

    def __init__(self, message: str):
        super().__init__(EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PreemptionGuard:
    """Context manager: while active, SIGTERM requests a clean stop instead of killing the process.

    Signal handlers can only be installed from the main thread; elsewhere the guard does nothing (SIGTERM keeps its
    previous behaviour) and `requested` stays False.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        self._signum = signum
        self._previous = None
        self._installed = False
        self.requested = False

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self._signum, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            signal.signal(self._signum, self._previous)
            self._installed = False

    def _handle(self, signum, frame) -> None:
        if not self.requested:
            self.requested = True
            return
        self.__exit__()  # a second signal: previous behaviour (by default, terminate now)
        signal.raise_signal(signum)

    def stop_callback(self) -> keras.callbacks.Callback:
        """A callback that ends `fit` at the end of the batch during which the stop was requested."""
        return _StopWhen(lambda: self.requested)

    def raise_if_requested(self, describe: Callable[[], str]) -> None:
        """After state is saved: prints one line (`describe()` says where the run resumes) and raises `Preempted`.

        Raises:
          Preempted: a stop was requested.
        """
        if self.requested:
            message = f"preempted (SIGTERM): state saved; {describe()}"
            print(message, flush=True)
            raise Preempted(message)


class _StopWhen(keras.callbacks.Callback):
    def __init__(self, predicate: Callable[[], bool]):
        super().__init__()
        self._predicate = predicate

    def on_train_batch_end(self, batch, logs=None):
        if self._predicate():
            self.model.stop_training = True
