"""Toy pieces the engine tests share: tiny Dense subnetworks on a 3-class task of 4x4 uint8 images.

A plain module, not a test module (like tiny_nasnet.py), so that no test imports another: pytest puts tests/ on
sys.path, and so does running a test file as a script (test_distribution's subprocess). Import it under this one name
only: a second import under another name would register its Keras classes twice. The registration packages are the
ones the runs these tests save name in their files.
"""

from __future__ import annotations

import keras
import numpy as np

from improve_nas.adanet import Builder, EngineSettings, Generator, LossSpec, Partitions, RunDirectory, grow_ensemble

K = 3


def toy_data(seed=0, n=96):
    """Class c's pixels lie in [60c, 60c + 60): learnable in a few steps. Selection reuses the training images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, size=n).astype(np.int32)
    images = (rng.integers(0, 60, size=(n, 4, 4, 1)) + 60 * labels[:, None, None, None]).astype(np.uint8)
    return Partitions(x_train=images[:64], y_train=labels[:64], x_select=images[:64], y_select=labels[:64],
                      x_test=images[64:], y_test=labels[64:], num_classes=K)


class Interrupt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (a simulated kill) at the end of batch `after` (counted from 1) of this `fit`."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_train_batch_end(self, batch, logs=None):
        self.after -= 1
        if self.after == 0:
            raise KeyboardInterrupt("simulated kill")


# ---- width-parameterised nets on a Scale preprocessing layer (test_engine and the tests built on its `grow`) ------

@keras.saving.register_keras_serializable(package="improve_nas_tests")
class DenseNet(keras.Model):
    """Rescaled flat input -> Dense(width) -> logits; enough to learn the toy task. Its layers take its dtype policy."""

    def __init__(self, *, width: int, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.width, self.num_classes = width, num_classes
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy)
        self.hidden = keras.layers.Dense(width, activation="relu", dtype=self.dtype_policy)
        self.head = keras.layers.Dense(num_classes, dtype=self.dtype_policy)

    def call(self, x, training=False):
        h = self.hidden(self.flatten(x))
        return {"logits": self.head(h), "features": h}

    def get_config(self):
        return {**super().get_config(), "width": self.width, "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="improve_nas_tests")
class Scale(keras.layers.Layer):
    def call(self, x, training=False):
        return keras.ops.cast(x, "float32") / 255.0


class WidthBuilder(Builder):
    def __init__(self, width: int):
        self.width = width

    @property
    def name(self):
        return f"dense_{self.width}"

    def shared(self):
        return {"width": self.width}

    def build_subnetwork(self, *, num_classes, input_shape):
        return DenseNet(width=self.width, num_classes=num_classes, name=self.name)


class SameGenerator(Generator):
    def generate_candidates(self, previous_ensemble, iteration):
        return [WidthBuilder(8)]


class GrowingGenerator(Generator):
    """Two candidates, narrower and wider than the last member (like the dynamic generator)."""

    def generate_candidates(self, previous_ensemble, iteration):
        width = previous_ensemble.members[-1].shared["width"] if previous_ensemble else 4
        return [WidthBuilder(width + 1), WidthBuilder(width * 4)]


def settings(**overrides):
    values = dict(num_iterations=3, iteration_steps=6, batch_size=16, optimizer="sgd", learning_rate=0.1,
                  schedule="cosine", clip_norm=5.0, loss=LossSpec(label_smoothing=0.1, distillation="none"),
                  checkpoint_steps=2, checkpoint_secs=0, keep_checkpoint_max=2, seed=3, verbose=False,
                  evaluator_batch_size=32, eval_batch_size=32)
    values.update(overrides)
    return EngineSettings(**values)


def grow(path, generator=None, data=None, on_iteration_end=None, **overrides):
    return grow_ensemble(run_dir=RunDirectory(str(path)), settings=settings(**overrides),
                         generator=generator or SameGenerator(), data=data or toy_data(),
                         make_preprocessing=lambda seed: Scale(), on_iteration_end=on_iteration_end)


# ---- one fixed net that rescales inside, on an Identity preprocessing (test_preemption, test_integrity) -------------

@keras.saving.register_keras_serializable(package="improve_nas_preemption_tests")
class Dense(keras.Model):
    def __init__(self, *, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(8, activation="relu")
        self.head = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        h = self.hidden(self.flatten(keras.ops.cast(x, "float32") / 255.0))
        return {"logits": self.head(h), "features": h}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class DenseBuilder(Builder):
    name = "dense"

    def build_subnetwork(self, *, num_classes, input_shape):
        return Dense(num_classes=num_classes, name=self.name)


class DenseGenerator(Generator):
    def generate_candidates(self, previous_ensemble, iteration):
        return [DenseBuilder()]


SETTINGS = EngineSettings(num_iterations=3, iteration_steps=6, batch_size=16, optimizer="sgd", learning_rate=0.1,
                          loss=LossSpec(label_smoothing=0.1), checkpoint_steps=2, checkpoint_secs=0,
                          keep_checkpoint_max=5, seed=3, verbose=False)
