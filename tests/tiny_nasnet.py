"""Helpers shared by the NASNet model tests: a tiny network, small random images, tensors as NumPy."""

from __future__ import annotations

import numpy as np
from keras import ops

from improve_nas.models.nasnet import NASNet


def numpy(x):
    return ops.convert_to_numpy(x)


def images(batch=2, height=8, width=8, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, channels)).astype("float32")


def tiny(**kwargs):
    """A 5-cell NASNet (3 normal, 2 reduction) of width 2; drop path off unless asked for."""
    args = dict(num_classes=3, num_cells=3, num_conv_filters=2, drop_path_keep_prob=1.0)
    return NASNet(**{**args, **kwargs})
