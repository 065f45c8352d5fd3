"""XLA's persistent compilation cache (improve_nas/compilation_cache.py) and the iteration steps it can serve."""

from __future__ import annotations

import logging

import keras
import pytest
from toy_engine import grow

from improve_nas.adanet import LossSpec
from improve_nas.compilation_cache import persistent_compilation_cache

pytestmark = pytest.mark.multibackend

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA's persistent cache is JAX's")


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="TensorFlow has no such cache")
def test_tensorflow_uses_no_cache(tmp_path):
    with persistent_compilation_cache(str(tmp_path / "xla")) as directory:
        assert directory is None
    assert not (tmp_path / "xla").exists()


@jax_only
def test_the_cache_directory_is_set_for_the_block_and_restored_after(tmp_path):
    import jax

    before = jax.config.jax_compilation_cache_dir
    with persistent_compilation_cache(str(tmp_path / "xla")) as directory:
        assert directory == str(tmp_path / "xla") == jax.config.jax_compilation_cache_dir
        assert (tmp_path / "xla").is_dir()
    assert jax.config.jax_compilation_cache_dir == before


@jax_only
def test_turned_off_by_jax_setting(tmp_path):
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    try:
        with persistent_compilation_cache(str(tmp_path / "xla")) as directory:
            assert directory is None
    finally:
        jax.config.update("jax_enable_compilation_cache", True)


@jax_only
@pytest.mark.parametrize("distillation, compiled, loaded", [
    ("none", 1, 2),      # no loss reads the frozen members: every iteration's step is iteration 0's program
    ("adaptive", 3, 0),  # iteration t's step runs t frozen members as the teacher: a new program each time
])
def test_later_iterations_load_iteration_0s_train_step_when_no_loss_reads_the_frozen_members(
        tmp_path, caplog, distillation, compiled, loaded):
    import jax

    caplog.set_level(logging.DEBUG, logger="jax._src.compiler")
    threshold = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # the toy step compiles in well under 1 s
    try:
        with persistent_compilation_cache(str(tmp_path / "xla")):
            grow(tmp_path / "run", num_iterations=3,
                 loss=LossSpec(label_smoothing=0.1, distillation=distillation))
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
    messages = [record.getMessage() for record in caplog.records if "'jit_train_step'" in record.getMessage()]
    assert sum("CACHE MISS" in m for m in messages) == compiled, messages
    assert sum("cache hit" in m for m in messages) == loaded, messages
