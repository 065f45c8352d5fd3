"""Helper for tests/test_models.py: NASNet logits on this process's Keras backend.

    KERAS_BACKEND=jax python tests/backend_check_nasnet.py DIR

Reads DIR/config.json (a `NASNet.get_config()`), DIR/nasnet.weights.h5 and DIR/images.npy, writes the
inference logits to DIR/logits.npy and prints the backend name last.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from improve_nas.models import NASNet  # noqa: E402


def main(directory: str) -> None:
    with open(os.path.join(directory, "config.json")) as f:
        model = NASNet.from_config(json.load(f))
    images = np.load(os.path.join(directory, "images.npy"))
    model.build((None, *images.shape[1:]))
    model.load_weights(os.path.join(directory, "nasnet.weights.h5"))
    # `predict` compiles the forward pass once; eager JAX would compile every op separately (slower here).
    logits = model.predict(images, batch_size=len(images), verbose=0)["logits"]
    np.save(os.path.join(directory, "logits.npy"), logits)
    print(keras.config.backend())


if __name__ == "__main__":
    main(sys.argv[1])
