"""Shared test set-up.

The Keras backend is chosen by KERAS_BACKEND before keras is first imported (tensorflow by default). Tests that must
also pass on the JAX backend carry `pytestmark = pytest.mark.multibackend`; the README's test command runs those a
second time with KERAS_BACKEND=jax.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
    config.addinivalue_line("markers", "multibackend: also run on the JAX backend (KERAS_BACKEND=jax)")
    config.addinivalue_line("markers", "slow: longer end-to-end checks, still run by the README test command")
