"""The exported model's input contract: raw uint8 images `[B, H, W, C]` of the training shape, nothing else.

`ServingModel` wraps a finished ensemble (any model returning `logits`, `probabilities` and `classes`) for
`export/`. It refuses any other dtype, rank, height, width or channel count with one `ValueError` naming what was
given and what is expected (floats in [0, 1] or wider integers would otherwise be scaled as if 0..255 and classified
silently wrong), and answers an empty batch with empty outputs without running the members (TensorFlow's
convolutions return a wrongly shaped result on zero rows, which batch norm then rejects).

Checks are on static dtypes and shapes, so they happen once at trace time, on TensorFlow and JAX alike.
Importing this module registers every class an exported `ensemble.keras` holds, for `keras.saving.load_model`.
"""

from __future__ import annotations

import keras
from keras import ops

from improve_nas import keras_members
from improve_nas.adanet import ensemble_model, ensemblers
from improve_nas.data import augment
from improve_nas.models import nasnet

# Imported for the classes they register, so that loading an exported `ensemble.keras` needs only this module.
REGISTERING_MODULES = (ensemble_model, ensemblers, augment, nasnet, keras_members)
IMAGE_DTYPE = "uint8"


def describe(images) -> str:
    """`float32 [5, 32, 32, 3]`: dtype and shape as a user reads them (`B` for an unknown batch size)."""
    dtype = keras.backend.standardize_dtype(images.dtype)
    return f"{dtype} [{', '.join('B' if d is None else str(d) for d in images.shape)}]"


def expected_images(image_shape: tuple[int, int, int]) -> str:
    return f"{IMAGE_DTYPE} images of shape [B, {', '.join(map(str, image_shape))}]"


def check_images(images, image_shape: tuple[int, int, int]) -> None:
    """Raises ValueError unless `images` is uint8 `[B, *image_shape]`."""
    shape = tuple(images.shape)
    if keras.backend.standardize_dtype(images.dtype) != IMAGE_DTYPE or len(shape) != 4 \
            or tuple(shape[1:]) != tuple(image_shape):
        raise ValueError(f"expected {expected_images(image_shape)}, got {describe(images)}; "
                         f"pass raw pixels 0..255 as uint8 at the training image size")


@keras.saving.register_keras_serializable(package="improve_nas")
class ServingModel(keras.Model):
    """`ensemble` behind the input contract; outputs `logits` [B, K], `probabilities` [B, K], `classes` [B].

    Args:
      ensemble: a model mapping uint8 images to `{"logits", "probabilities", "classes"}`.
      image_shape: `(H, W, C)` of the training images.
      num_classes: K, the width of the logits (needed for empty outputs, which never run the ensemble).
      temperature: T of temperature scaling: the ensemble's logits are divided by it, and the probabilities follow
        (the classes do not change); 1.0 leaves them as they are.
    """

    def __init__(self, *, ensemble: keras.Model, image_shape, num_classes: int, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.ensemble = ensemble
        self.temperature = float(temperature)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)

    def build(self, input_shape=None):
        # Also on loading: builds the members before their weights are read.
        if not self.ensemble.built:
            self.ensemble(ops.zeros((1, *self.image_shape), dtype=IMAGE_DTYPE), training=False)
        self.built = True

    def call(self, images):
        check_images(images, self.image_shape)
        batch = images.shape[0]
        if batch == 0:
            return self._empty(0)
        if batch is None:  # A TensorFlow graph traced for any batch size: decide when it runs.
            size = ops.shape(images)[0]
            return ops.cond(size > 0, lambda: self._outputs(images), lambda: self._empty(size))
        return self._outputs(images)

    def _outputs(self, images):
        outputs = self.ensemble(images, training=False)
        logits, probabilities = outputs["logits"], outputs["probabilities"]
        if self.temperature != 1.0:
            logits = logits / self.temperature
            probabilities = ops.softmax(logits, axis=-1)
        return {"logits": logits, "probabilities": probabilities, "classes": ops.cast(outputs["classes"], "int32")}

    def _empty(self, size):
        logits = ops.zeros((size, self.num_classes), dtype="float32")
        return {"logits": logits, "probabilities": logits, "classes": ops.zeros((size,), dtype="int32")}

    def predict(self, x, *args, **kwargs):
        if hasattr(x, "shape") and hasattr(x, "dtype"):  # An array (not a dataset): checked before Keras' loop,
            check_images(x, self.image_shape)  # which on JAX leaves the weights unset when a batch raises.
            if x.shape[0] == 0:  # Keras' loop fails on zero rows (no batch to stack).
                return keras.tree.map_structure(ops.convert_to_numpy, self(x))
        return super().predict(x, *args, **kwargs)

    def get_config(self):
        return {**super().get_config(), "ensemble": keras.saving.serialize_keras_object(self.ensemble),
                "image_shape": list(self.image_shape), "num_classes": self.num_classes, "temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["ensemble"] = keras.saving.deserialize_keras_object(config["ensemble"])
        return cls(**config)
