"""TensorBoard event files laid out as AdaNet did: one directory per subnetwork and per candidate ensemble.

    tensorboard/subnetwork/<member>/    loss (the subnetwork's training loss), learning_rate
    tensorboard/ensemble/<candidate>/   adanet_loss (training), mixture-weight L1 norms
    tensorboard/                        iteration, test accuracy and loss of the chosen ensemble

Event files are written with `tf.summary`; where TensorFlow or TensorBoard is not installed (e.g. a JAX-only GPU box)
summaries are skipped with one notice, and training is unaffected. (Not named `tensorboard.py`: run from inside
improve_nas/, as the 2019 README did, that would hide the `tensorboard` package `tf.summary` needs.)
"""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np


def available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


class _Writers:
    def __init__(self, root: str):
        import tensorflow as tf

        self._tf = tf
        self._root = root
        self._writers: dict[str, object] = {}

    def scalar(self, directory: str, tag: str, value: float, step: int) -> None:
        if directory not in self._writers:
            self._writers[directory] = self._tf.summary.create_file_writer(os.path.join(self._root, directory))
        with self._writers[directory].as_default(step=step):
            self._tf.summary.scalar(tag, float(value))

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


class TrainingSummaries(keras.callbacks.Callback):
    """Writes the per-candidate training losses and the learning rate every `every_steps` steps.

    Args:
      root: the run's tensorboard directory.
      every_steps: summary period in steps (`--save_summary_steps`).
      base_step: global step at the start of this iteration (iteration · iteration_steps).
      start_step: step within the iteration at which this `fit` resumes.
      subnetwork_loss_keys / adanet_loss_keys: member / candidate ensemble name -> key of its loss in the
        logs (the iteration model's attributes of those names).
    """

    def __init__(self, *, root: str, every_steps: int, base_step: int, start_step: int,
                 subnetwork_loss_keys: dict[str, str], adanet_loss_keys: dict[str, str]):
        super().__init__()
        self._writers = _Writers(root)
        self._every = max(1, every_steps)
        self._base = base_step
        self._step = start_step
        self._members = dict(subnetwork_loss_keys)
        self._candidates = dict(adanet_loss_keys)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self._every or not logs:
            return
        step = self._base + self._step
        # A float or a schedule of the step within the iteration; a LossScaleOptimizer's own rate is a dummy 0.
        schedule = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)._learning_rate
        rate = schedule(self._step) if callable(schedule) else schedule
        for name, key in self._members.items():
            if key in logs:
                self._writers.scalar(f"subnetwork/{name}", "loss", logs[key], step)
            self._writers.scalar(f"subnetwork/{name}", "learning_rate", float(keras.ops.convert_to_numpy(rate)),
                                 step)
        for name, key in self._candidates.items():
            if key in logs:
                self._writers.scalar(f"ensemble/{name}", "adanet_loss", logs[key], step)

    def on_train_end(self, logs=None):
        self._writers.flush()


def write_iteration_summary(root: str, summary: dict) -> None:
    """Test metrics of the chosen ensemble and its members, and its mixture-weight norms, at the iteration's end."""
    writers = _Writers(root)
    step = summary["global_step"]
    writers.scalar("", "iteration", summary["iteration"], step)
    writers.scalar("", "accuracy", summary["ensemble"]["accuracy"], step)
    writers.scalar("", "loss", summary["ensemble"]["loss"], step)
    for name, metrics in summary["member_metrics"].items():
        writers.scalar(f"subnetwork/{name}/eval", "accuracy", metrics["accuracy"], step)
        writers.scalar(f"subnetwork/{name}/eval", "loss", metrics["loss"], step)
    for index, weight in enumerate(summary["mixture_weights"]):
        writers.scalar(f"ensemble/{summary['chosen']}", f"mixture_weight_norms/subnetwork_{index}",
                       float(np.abs(np.asarray(weight, dtype=np.float64)).sum()), step)
    writers.flush()
