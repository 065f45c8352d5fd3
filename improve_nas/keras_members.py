"""Any Keras classifier as an AdaNet member: the adapter, its builder and generator, and the serialisability check.

The engine's subnetworks return a dict (`"logits"`, and `"features"` for matrix mixture weights); a user's classifier
returns logits. `KerasMember` wraps it (registered, so a member saved by one iteration reloads in the next, in a
resumed run and in the export). Features: a model that returns a dict passes its own `"logits"` and `"features"`
through; one that returns a tensor gives its logits as features too (matrix mixture weights then learn a K x K map of
each member's logits).

`CastToFloat32` is the preprocessing of these runs: images reach the user's model as given, only cast to float32.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from improve_nas.adanet.subnetwork import Builder, Generator
from improve_nas.errors import UsageError

BuildFn = Callable[[int, tuple], keras.Model]


@keras.saving.register_keras_serializable(package="improve_nas")
class KerasMember(keras.Model):
    """`model` (images -> logits [B, K], or a dict with `"logits"`) as an engine subnetwork."""

    def __init__(self, *, model: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def call(self, x, training=False):
        outputs = self.model(x, training=training)
        if isinstance(outputs, dict):
            return {"logits": outputs["logits"], "features": outputs.get("features", outputs["logits"])}
        return {"logits": outputs, "features": outputs}

    def get_config(self):
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="improve_nas")
class CastToFloat32(keras.layers.Layer):
    """Casts raw images to float32, values unchanged (a `grow` run without `rescale`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = True

    def call(self, images, training=False):
        return ops.cast(images, "float32")


class KerasBuilder(Builder):
    """One candidate per iteration: a fresh model from `build_fn`, wrapped."""

    def __init__(self, build_fn: BuildFn, name: str):
        self.build_fn = build_fn
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def build_subnetwork(self, *, num_classes, input_shape):
        return KerasMember(model=call_build_fn(self.build_fn, num_classes, tuple(input_shape)), name=self._name)


class KerasGenerator(Generator):
    """The same builder at every iteration (deterministic, as the engine needs on resume)."""

    def __init__(self, build_fn: BuildFn, name: str):
        self.builder = KerasBuilder(build_fn, name)

    def generate_candidates(self, previous_ensemble, iteration):
        return [self.builder]


def builder_name(build_fn: BuildFn) -> str:
    """`build_fn`'s name as a member name (`t0_<name>`): letters, digits and underscores; `model` for a lambda."""
    name = re.sub(r"\W+", "_", getattr(build_fn, "__name__", "")).strip("_")
    return name or "model"


def call_build_fn(build_fn: BuildFn, num_classes: int, input_shape: tuple) -> keras.Model:
    model = build_fn(num_classes, input_shape)
    if not isinstance(model, keras.Model):
        raise UsageError(f"build_fn must return a keras.Model, got {type(model).__name__}")
    return model


def check_member(build_fn: BuildFn, *, num_classes: int, sample: np.ndarray) -> None:
    """Builds one member, checks its logits' shape and that it saves and reloads to the same outputs.

    Raises:
      UsageError: one line saying what is wrong, before anything is trained.
    """
    member = KerasBuilder(build_fn, builder_name(build_fn)).build_subnetwork(num_classes=num_classes,
                                                                               input_shape=sample.shape[1:])
    x = ops.cast(ops.convert_to_tensor(sample), "float32")
    logits = ops.convert_to_numpy(member(x, training=False)["logits"])
    if logits.shape != (len(sample), num_classes):
        raise UsageError(f"build_fn's model must output logits of shape [B, {num_classes}] for {num_classes} classes; "
                         f"it gave {list(logits.shape)} for a batch of {len(sample)}")
    with tempfile.TemporaryDirectory(prefix="improve_nas_check_") as directory:
        path = os.path.join(directory, "member.keras")
        try:
            member.save(path)
            reloaded = keras.saving.load_model(path, compile=False)  # safe mode, as the engine loads members
            again = ops.convert_to_numpy(reloaded(x, training=False)["logits"])
        except Exception as error:  # noqa: BLE001  whatever Keras raises, the user gets one line
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise UsageError(
                f"build_fn's model cannot be saved and reloaded, so its members could not be reloaded on resume or "
                f"export ({type(error).__name__}: {reason}); use built-in layers, or register custom layers and "
                f"models with @keras.saving.register_keras_serializable and give them get_config (no Lambda "
                f"layers with Python closures)") from None
    if not np.allclose(logits, again, rtol=1e-4, atol=1e-5):
        raise UsageError(
            f"build_fn's model reloads from a .keras file with different outputs (largest difference "
            f"{float(np.max(np.abs(logits - again))):.3g}); its get_config/from_config or its weights do not "
            f"round-trip: register custom layers and save every setting they need in get_config")
