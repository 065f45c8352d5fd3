"""XLA's persistent compilation cache on JAX: a train step compiled once is loaded from disk, not compiled again.

Why: Keras on JAX compiles each iteration's train step with XLA, which dominates the time to the first step (170 s
for a NASNet-A 6@768 on an H100). When no loss reads the frozen members, iteration t's step is the same program as
iteration 0's (`IterationModel` leaves idle layers out of it), so with the cache only iteration 0 compiles, and a
rerun or a resumed run with the same shapes compiles nothing. On 2 CPU cores, 3-cell F=8 NASNet: first steps 25.5,
7.5, 6.7 s with the cache against 22.1, 23.4, 26.7 s without.

JAX's own settings are honoured: `JAX_COMPILATION_CACHE_DIR` moves the cache, `JAX_ENABLE_COMPILATION_CACHE=false`
turns it off. TensorFlow has no such cache (its default path does not use XLA); there this is a no-op.
The cache is trusted code: keep it in a directory only you can write to (the default is in your home directory).
"""

from __future__ import annotations

import contextlib
import logging
import os

import keras


def default_directory() -> str:
    """`$XDG_CACHE_HOME/improve_nas/xla` (`~/.cache/improve_nas/xla` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "improve_nas", "xla")


@contextlib.contextmanager
def persistent_compilation_cache(directory: str | None = None):
    """While the block runs, XLA executables compiled by JAX are stored in and loaded from a directory on disk.

    Args:
        directory: Where; None: JAX's configured directory (`JAX_COMPILATION_CACHE_DIR`), else `default_directory()`.

    Yields the directory in use, or None when the backend is not JAX or JAX's cache is turned off. Afterwards JAX's
    previous setting is back (a directory the block deleted is not written to later in the process).
    """
    if keras.backend.backend() != "jax":
        yield None
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if not jax.config.jax_enable_compilation_cache:
        yield None
        return
    previous = jax.config.jax_compilation_cache_dir
    chosen = directory or previous or default_directory()
    os.makedirs(chosen, exist_ok=True)
    if chosen == previous:
        yield chosen
        return
    _point_cache_at(chosen, jax, compilation_cache)
    try:
        yield chosen
    finally:
        _point_cache_at(previous, jax, compilation_cache)


def _point_cache_at(directory: str | None, jax, compilation_cache) -> None:
    # JAX opens its cache once, at the first compilation that uses it: reset so the next one opens `directory`.
    jax.config.update("jax_compilation_cache_dir", directory)
    logger = logging.getLogger("jax._src.compilation_cache")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the reset logs an INFO line that would show in the run's output
    try:
        compilation_cache.reset_cache()
    finally:
        logger.setLevel(level)
