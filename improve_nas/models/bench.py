"""Training-step throughput of one NASNet (`benchmarks/bench_nasnet.py`, later `improve-nas bench`)."""

from __future__ import annotations

import time

import keras
import numpy as np

from improve_nas.errors import UsageError
from improve_nas.models.nasnet import NASNet

DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def benchmark_training_step(
    *,
    num_cells: int = 3,
    num_conv_filters: int = 10,
    batch_size: int = 32,
    steps: int = 10,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    dtype: str = "float32",
    data_format: str = "NHWC",
    seed: int = 0,
) -> dict:
    """Times plain `fit` steps of one NASNet on random data.

    The model is compiled with SGD (momentum 0.9) and sparse softmax cross-entropy on
    its logits (plus its L2 terms, which `fit` adds). The aux head is off, as in the
    paper presets; drop path is on (keep 0.6), dense dropout off. The first `fit` call
    runs one step and is reported as ``compile_seconds`` (tracing and compilation plus
    one step); a second `fit` over ``steps`` fresh batches is the measurement. Data
    come from host NumPy arrays, so the host-to-device copy is part of each step.

    Args:
        num_cells: Normal cells.
        num_conv_filters: Base width F.
        batch_size: Images per step.
        steps: Measured steps.
        image_size: Height and width of the square images.
        channels: Image channels.
        num_classes: Logits width.
        dtype: ``"float32"`` or ``"bfloat16"`` (Keras ``mixed_bfloat16``: bfloat16
            compute, float32 weights).
        data_format: The model's internal layout, ``"NHWC"`` or ``"NCHW"``.
        seed: Seeds Keras, NumPy and Python randomness.

    Returns:
        ``backend``, ``device``, ``batch_size``, ``config`` (the other arguments),
        ``compile_seconds`` and ``img_per_s``.
    """
    if dtype not in DTYPE_POLICIES:
        raise UsageError(f"dtype={dtype!r} is invalid; valid: {', '.join(DTYPE_POLICIES)}")
    for key, value in {"batch_size": batch_size, "steps": steps, "image_size": image_size}.items():
        if value < 1:
            raise UsageError(f"{key}={value} is invalid; it must be >= 1")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch_size * (steps + 1), image_size, image_size, channels)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size * (steps + 1))

    model = NASNet(
        num_classes=num_classes,
        num_cells=num_cells,
        num_conv_filters=num_conv_filters,
        use_aux_head=False,
        total_training_steps=steps + 1,
        data_format=data_format,
        dtype=DTYPE_POLICIES[dtype],  # every layer takes the model's policy; the global one stays untouched
    )
    model.build((None, image_size, image_size, channels))  # create weights eagerly, not while tracing
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    fit_args = {"batch_size": batch_size, "epochs": 1, "shuffle": False, "verbose": 0}
    start = time.perf_counter()
    model.fit(images[:batch_size], {"logits": labels[:batch_size]}, **fit_args)
    compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit(images[batch_size:], {"logits": labels[batch_size:]}, **fit_args)
    float(history.history["loss"][-1])  # the loss is a device value: wait for the last step
    elapsed = time.perf_counter() - start

    return {
        "backend": keras.config.backend(),
        "device": keras.distribution.list_devices()[0],
        "batch_size": batch_size,
        "config": {
            "num_cells": num_cells,
            "num_conv_filters": num_conv_filters,
            "image_size": image_size,
            "channels": channels,
            "num_classes": num_classes,
            "dtype": dtype,
            "data_format": data_format,
            "steps": steps,
        },
        "compile_seconds": round(compile_seconds, 3),
        "img_per_s": round(steps * batch_size / elapsed, 2),
    }
