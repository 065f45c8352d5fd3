"""Shared test set-up.

The Keras backend is chosen by KERAS_BACKEND before keras is first imported (tensorflow by default). Tests that must
also pass on the JAX backend carry `pytestmark = pytest.mark.multibackend`; the README's test command runs those a
second time with KERAS_BACKEND=jax. The markers and the warning filters are declared in pytest.ini.
"""

import atexit
import os
import shutil
import tempfile

# Shared fixtures live in helper modules (not test modules); registered here, so tests take them by name alone.
pytest_plugins = ["gcs_emulator", "smoke_run"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX runs (in this process and in the CLI subprocesses) cache their XLA compilations in a directory of the
# suite's own, removed at exit, rather than in the user's cache.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="improve_nas_test_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

