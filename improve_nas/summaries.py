"""TensorBoard event files laid out as AdaNet did: one directory per subnetwork and per candidate ensemble.

    tensorboard/subnetwork/<member>/    loss, its terms loss/cross_entropy, loss/l2 (weight decay), loss/distillation
                                        (with a teacher), loss/aux_head (with an aux head); learning_rate
    tensorboard/subnetwork/<member>/eval/  its test accuracy, loss, nll, ece and brier, at the iteration's end
    tensorboard/ensemble/<candidate>/   adanet_loss, its terms adanet_loss/cross_entropy, adanet_loss/complexity;
                                        mixture-weight L1 norms (the chosen one, at the iteration's end)
    tensorboard/                        iteration, test accuracy and loss of the chosen ensemble (and eval/nll,
                                        eval/ece, eval/brier: `adanet/calibration.py`); the genotypes
                                        chosen in the iteration (text), when the members have one

Training values are written every `--save_summary_steps` steps, each the value of that step (on that step's batch), so
the curves do not depend on the checkpoint period. The subnetwork terms and, when training computes the ensembles
(learned mixture weights, or selection by the EMA of the AdaNet loss), the ensemble terms come from the training step
itself; otherwise the ensemble terms are computed at the summary step, on the same batch in inference mode, so that
the frozen members stay out of the training step (docs/design.md §2).

Event files are written with `tf.summary`; where TensorFlow or TensorBoard is not installed (e.g. a JAX-only GPU box)
summaries are skipped with one notice, and training is unaffected. (Not named `tensorboard.py`: run from inside
improve_nas/, as the 2019 README did, that would hide the `tensorboard` package `tf.summary` needs.)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import keras
import numpy as np

CALIBRATION_KEYS = ("nll", "ece", "brier")


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

    def text(self, directory: str, tag: str, value: str, step: int) -> None:
        if directory not in self._writers:
            self._writers[directory] = self._tf.summary.create_file_writer(os.path.join(self._root, directory))
        with self._writers[directory].as_default(step=step):
            self._tf.summary.text(tag, value)

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()


class TrainingSummaries(keras.callbacks.Callback):
    """Writes every candidate's training loss terms and the learning rate every `every_steps` steps.

    Args:
      root: the run's tensorboard directory.
      every_steps: summary period in steps (`--save_summary_steps`).
      base_step: global step at the start of this iteration (iteration · iteration_steps).
      start_step: step within the iteration at which this `fit` resumes.
      subnetwork_log_keys / ensemble_log_keys: member / candidate ensemble name -> {term: key of the step's value in
        the logs} (the iteration model's attributes of those names).
      ensemble_terms_at: where `ensemble_log_keys` is empty, step index within the iteration -> {candidate: {term:
        value}} on that step's batch (`IterationModel.ensemble_loss_terms`).
    """

    def __init__(self, *, root: str, every_steps: int, base_step: int, start_step: int,
                 subnetwork_log_keys: dict[str, dict[str, str]], ensemble_log_keys: dict[str, dict[str, str]],
                 ensemble_terms_at: Callable[[int], dict[str, dict[str, float]]] | None = None):
        super().__init__()
        self._writers = _Writers(root)
        self._every = max(1, every_steps)
        self._base = base_step
        self._step = start_step
        self._members = dict(subnetwork_log_keys)
        self._candidates = dict(ensemble_log_keys)
        self._ensemble_terms_at = None if ensemble_log_keys else ensemble_terms_at

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self._every or not logs:
            return
        step = self._base + self._step
        # A float or a schedule of the step within the iteration; a LossScaleOptimizer's own rate is a dummy 0.
        schedule = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)._learning_rate
        rate = float(keras.ops.convert_to_numpy(schedule(self._step) if callable(schedule) else schedule))
        for name, keys in self._members.items():
            for term, key in keys.items():
                self._writers.scalar(f"subnetwork/{name}", _tag("loss", term), logs[key], step)
            self._writers.scalar(f"subnetwork/{name}", "learning_rate", rate, step)
        if self._candidates:
            ensembles = {name: {term: logs[key] for term, key in keys.items()}
                         for name, keys in self._candidates.items()}
        elif self._ensemble_terms_at is not None:
            ensembles = self._ensemble_terms_at(self._step - 1)  # the batch of the step just trained
        else:
            ensembles = {}
        for name, terms in ensembles.items():
            for term, value in terms.items():
                self._writers.scalar(f"ensemble/{name}", _tag("adanet_loss", term), value, step)

    def on_train_end(self, logs=None):
        self._writers.flush()


def _tag(total: str, term: str) -> str:
    """"loss" for the total, "loss/<term>" for a term of it."""
    return total if term == total else f"{total}/{term}"


def write_iteration_summary(root: str, summary: dict) -> None:
    """Test metrics of the chosen ensemble and its members, and its mixture-weight norms, at the iteration's end."""
    writers = _Writers(root)
    step = summary["global_step"]
    writers.scalar("", "iteration", summary["iteration"], step)
    writers.scalar("", "accuracy", summary["ensemble"]["accuracy"], step)
    writers.scalar("", "loss", summary["ensemble"]["loss"], step)
    for key in CALIBRATION_KEYS:
        if key in summary["ensemble"]:  # summaries written before the calibration metrics have none
            writers.scalar("", f"eval/{key}", summary["ensemble"][key], step)
    for name, metrics in summary["member_metrics"].items():
        for key in ("accuracy", "loss") + CALIBRATION_KEYS:
            if key in metrics:
                writers.scalar(f"subnetwork/{name}/eval", key, metrics[key], step)
    for index, weight in enumerate(summary["mixture_weights"]):
        writers.scalar(f"ensemble/{summary['chosen']}", f"mixture_weight_norms/subnetwork_{index}",
                       float(np.abs(np.asarray(weight, dtype=np.float64)).sum()), step)
    chosen = chosen_genotypes(summary)
    if chosen:
        writers.text("", "chosen_genotypes", chosen, step)
    writers.flush()


def chosen_genotypes(summary: dict) -> str:
    """Markdown lines `member (hash): text form` of the iteration's chosen candidates that have a genotype."""
    from improve_nas.search.space import Genotype

    lines = []
    for entry in summary.get("subnetworks", []):
        shared = entry.get("shared", {})
        if entry.get("chosen") and "genotype" in shared:
            genotype = Genotype.from_dict(shared["genotype"])
            lines.append(f"- `{entry['name']}` ({genotype.digest()}): `{genotype.text()}`")
    return "\n".join(lines)
