"""Memory given back after each iteration (improve_nas/adanet/runtime/memory.py)."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest

from improve_nas.adanet.runtime.memory import released_after


def _fit_one_step() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    model.fit(np.ones((8, 4), "float32"), np.zeros(8, "int32"), batch_size=8, verbose=0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's traced graphs")
def test_the_train_steps_traced_in_an_iteration_are_freed_after_it():
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    existing = {id(obj) for obj in gc.get_objects() if isinstance(obj, FuncGraph)}
    with released_after():
        _fit_one_step()
        traced = [weakref.ref(obj) for obj in gc.get_objects() if isinstance(obj, FuncGraph) and id(obj) not in existing]
    assert traced, "fit traced no train step"
    # Without dropping the optimizer's CustomGradient registrations the train step's graph stays reachable.
    alive = [ref().name for ref in traced if ref() is not None]
    assert alive == []


@pytest.mark.multibackend
def test_the_session_is_cleared_after_a_finished_block_but_not_after_a_failed_one():
    keras.backend.clear_session()
    with released_after():
        assert keras.layers.Dense(1).name == "dense"
    assert keras.layers.Dense(1).name == "dense"  # names restart: the session was cleared

    keras.backend.clear_session()
    with pytest.raises(RuntimeError), released_after():
        keras.layers.Dense(1)
        raise RuntimeError("stop")
    assert keras.layers.Dense(1).name == "dense_1"  # a stopping process keeps its state for the caller to inspect


@pytest.mark.multibackend
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's device buffers")
def test_device_buffers_do_not_accumulate_over_iterations(tmp_path):
    """What an iteration put on the device (members, optimizer slots, the selection pass's outputs) is freed after
    it: the buffers alive after each iteration are the same, whatever the ensemble's size (on a GPU: its memory)."""
    import jax
    from toy_engine import grow

    held = []
    grow(tmp_path / "run", num_iterations=4,
         on_iteration_end=lambda summary: held.append(sorted((a.shape, str(a.dtype)) for a in jax.live_arrays())))
    assert len(held) == 4 and held[0], "the training partition at least stays on the device"
    assert held[1:] == held[:1] * 3
