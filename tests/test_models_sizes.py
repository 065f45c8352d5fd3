"""NASNet on inputs other than CIFAR's 32x32x3: digits (8x8x1), MNIST-like (28x28x1), 64x64x3."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_nasnet import images, numpy, tiny

pytestmark = pytest.mark.multibackend


@pytest.mark.parametrize("shape, aux_kernel", [((8, 8, 1), (1, 1)), ((28, 28, 1), (4, 4)), ((64, 64, 3), (10, 10))])
def test_other_input_sizes(shape, aux_kernel):
    model = tiny(num_classes=5)
    outputs = model(images(2, *shape), training=True)  # the training call runs every layer, aux head included
    assert {key: tuple(value.shape) for key, value in outputs.items()} == {
        "logits": (2, 5), "features": (2, 24 * 2), "aux_logits": (2, 5)}
    # The aux pool shrinks to small maps; its conv always covers the whole remaining map.
    assert tuple(model.aux_head.features.kernel.shape[:2]) == aux_kernel
    assert all(np.isfinite(numpy(value)).all() for value in outputs.values())
