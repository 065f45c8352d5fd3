"""Giving memory back between iterations, so a long run's footprint does not creep up with every member.

After `keras.backend.clear_session()` nothing of a finished iteration is reachable from our code, but four things keep
its memory: reference cycles not yet collected (Keras layers hold many), JAX's caches of compiled executables (one
train step per iteration, never called again), TensorFlow's global gradient registry (below), and glibc's allocator,
which keeps freed blocks (XLA compilations and traced graphs leave hundreds of MB) instead of returning them to the
system.

TensorFlow: the Keras optimizer sums gradients with `ReplicaContext.all_reduce`, which in a traced step wraps them in
`tf.custom_gradient`; in graph mode that registers a gradient function under a fresh `CustomGradient-N` name in a
process-wide registry that is never pruned, and its closure holds the whole traced train step (graph and captured
constants). Each iteration leaked one train step that way: measured on 2 CPU cores, host RSS after each of 8 iterations
of a 3-cell NASNet grew 855 → 1,104 MiB; with the registrations dropped it stays within 842–882 MiB. JAX: 1,407 →
1,671 MiB over 6 smoke iterations before the JAX cache release, 896 → 952 MiB after.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc

import keras


@contextlib.contextmanager
def released_after():
    """Runs a block whose models and traced steps are garbage once it ends (one AdaNet iteration), then frees them.

    On a normal exit: clears the Keras session, forgets the TensorFlow gradient registrations the block made (their
    graphs are dead) and calls `release_memory`. On an exception nothing is released (the process is stopping).
    """
    registered_before = _custom_gradient_names()
    yield
    keras.backend.clear_session()
    _forget_custom_gradients(keep=registered_before)
    release_memory()


def release_memory() -> None:
    """Collects garbage, drops JAX's compiled-function caches and returns freed heap pages to the system."""
    gc.collect()
    if keras.backend.backend() == "jax":
        import jax

        jax.clear_caches()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _gradient_registry() -> dict | None:
    """TensorFlow's name → gradient function table (private; None when absent or not TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return None
    from tensorflow.python.framework import ops as tf_ops

    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def _custom_gradient_names() -> frozenset[str]:
    registry = _gradient_registry()
    return frozenset(name for name in registry if name.startswith("CustomGradient-")) if registry else frozenset()


def _forget_custom_gradients(*, keep: frozenset[str]) -> None:
    registry = _gradient_registry()
    for name in _custom_gradient_names() - keep:
        registry.pop(name, None)


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None elsewhere (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
