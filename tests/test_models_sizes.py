"""NASNet on inputs other than CIFAR's 32x32x3: digits (8x8x1), MNIST-like (28x28x1), 64x64x3."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from improve_nas.models import NASNet

pytestmark = pytest.mark.multibackend


def numpy(x):
    return ops.convert_to_numpy(x)


def images(batch=2, height=8, width=8, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, channels)).astype("float32")


def tiny(**kwargs):
    """A 5-cell NASNet (3 normal, 2 reduction) of width 2; drop path off unless asked for."""
    args = dict(num_classes=3, num_cells=3, num_conv_filters=2, drop_path_keep_prob=1.0)
    return NASNet(**{**args, **kwargs})


@pytest.mark.parametrize("shape, aux_kernel", [((8, 8, 1), (1, 1)), ((28, 28, 1), (4, 4)), ((64, 64, 3), (10, 10))])
def test_other_input_sizes(shape, aux_kernel):
    model = tiny(num_classes=5)
    outputs = model(images(2, *shape), training=True)  # the training call runs every layer, aux head included
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        "logits": (2, 5), "features": (2, 24 * 2), "aux_logits": (2, 5)}
    # The aux pool shrinks to small maps; its conv always covers the whole remaining map.
    assert tuple(model.aux_head.features.kernel.shape[:2]) == aux_kernel
    assert all(np.isfinite(numpy(value)).all() for value in outputs.values())
