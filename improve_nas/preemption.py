"""Stopping cleanly on SIGTERM (what Vertex AI, GCE and Kubernetes send before they preempt or stop a machine) and
on Ctrl-C (SIGINT).

The default action of either signal ends the process at once (SIGINT with a long traceback), losing every step since
the last checkpoint. While a `PreemptionGuard` is active, the signal only raises a flag (a signal handler must not do
I/O: it may interrupt a print). Training sees the flag at the end of the current batch (`stop_callback` stops `fit`),
the engine writes its checkpoint as after every `fit` chunk, and the next `raise_if_requested` (called from the
engine's `on_write` hook) prints one line and raises `Preempted`, which exits the process with 128 + the signal's
number: 143 for SIGTERM (the code TensorFlow's own preemption handling uses for "restartable"), 130 for SIGINT.
Re-running the same command resumes at that checkpoint.

A second signal while the first is being handled restores the previous handlers and re-sends it: "stop now" still
works (the command line turns the resulting KeyboardInterrupt into one line, `trainer.trainer`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import keras

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_CODE = 128 + signal.SIGTERM  # a preemption; a Ctrl-C exits with 128 + SIGINT = 130
INTERRUPT_EXIT_CODE = 128 + signal.SIGINT
_WHAT = {signal.SIGTERM: "preempted (SIGTERM)", signal.SIGINT: "interrupted (Ctrl-C)"}


class Preempted(SystemExit):
    """The run stopped on SIGTERM or SIGINT after saving its state; re-running the same command resumes it.

    A `SystemExit` (code 128 + the signal's number) so that every entry point exits with the right code without
    having to know about it; in-process callers can catch it by this class.
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(128 + signum)
        self.message = message
        self.signum = signum

    def __str__(self) -> str:
        return self.message


class PreemptionGuard:
    """Context manager: while active, SIGTERM and SIGINT request a clean stop instead of ending the process.

    Signal handlers can only be installed from the main thread; elsewhere the guard does nothing (the signals keep
    their previous behaviour) and `requested` stays False.
    """

    def __init__(self, signals: tuple[int, ...] = SIGNALS):
        self._signals = tuple(signals)
        self._previous: dict[int, object] = {}
        self.signum: int | None = None  # the first signal received

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self.__exit__()  # a second signal: previous behaviour (by default, terminate or KeyboardInterrupt now)
        signal.raise_signal(signum)

    def stop_callback(self) -> keras.callbacks.Callback:
        """A callback that ends `fit` at the end of the batch during which the stop was requested."""
        return _StopWhen(lambda: self.requested)

    def raise_if_requested(self, describe: Callable[[], str]) -> None:
        """After state is saved: prints one line (`describe()` says where the run resumes) and raises `Preempted`.

        Raises:
          Preempted: a stop was requested.
        """
        if self.signum is not None:
            message = f"{_WHAT.get(self.signum, f'signal {self.signum}')}: state saved; {describe()}"
            print(message, flush=True)
            raise Preempted(message, self.signum)


class _StopWhen(keras.callbacks.Callback):
    def __init__(self, predicate: Callable[[], bool]):
        super().__init__()
        self._predicate = predicate

    def on_train_batch_end(self, batch, logs=None):
        if self._predicate():
            self.model.stop_training = True
