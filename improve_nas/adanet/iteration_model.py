"""The fused model of one AdaNet iteration: every candidate trains on the same minibatches.

One `IterationModel` holds the frozen previous ensemble (members `trainable=False`, always called
with `training=False`, and its frozen ensembler), an optional preprocessing layer applied once per
batch (augmentation: candidates and teachers see the same batch), the new candidate subnetworks and
one fresh ensembler per candidate ensemble. `compute_loss` adds up every candidate's subnetwork
loss and, when mixture weights are learned, every candidate ensemble's AdaNet loss (see
`losses.py`); it logs each term of each loss it computes as the step's value (`StepValue`), not a
running mean. Member logits enter the ensembles through `stop_gradient`, so the parameter sets
train independently and one optimizer serves them all (`optimizers.make_optimizer` with
`clip_groups=model.clip_groups()` for AdaNet's per-candidate clipping).

In training, frozen members are called only when a loss reads them: `adaptive` distillation (all
members), `born_again` (the last member only), or ensemble losses (learned mixture weights, or the
EMA that selection reads when there is no evaluator). Otherwise iteration t costs what iteration 0
does. Inference (`training=False`, e.g. `predict_on_batch`) computes everything.

Outputs (nested dicts of [B, K] logits, keyed by name):
    members         new members (`t{t}_{builder}`) and the previous members that were called
    ensembles       `selection_names`: the previous ensemble (if computed) and the new candidates
    aux_logits      training only, new members with an aux head
    regularization  training only, scalar sum of each new member's `losses`

Typical use by the iteration loop:

    model = IterationModel(iteration=t, builders=generator.generate_candidates(prev_record, t),
                           num_classes=K, input_shape=(32, 32, 3), previous=frozen_prev, ...)
    model.compile(optimizer=make_optimizer("momentum", learning_rate=0.025, schedule="cosine",
                                           decay_steps=steps, clip_norm=5,
                                           clip_groups=model.clip_groups()))
    model.fit(train_data, ...)            # may be called in chunks; the EMA carries on
    choice = select_candidate(...)        # selection.py
    record = model.ensemble_record(choice.index); chosen = model.frozen_ensemble(choice.index)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
from keras import ops

from improve_nas.adanet import losses as losses_lib
from improve_nas.adanet.ema import ZeroDebiasedEma
from improve_nas.adanet.ensemblers import EnsemblerSpec, restore_ensembler, serialize_ensembler
from improve_nas.adanet.losses import Distillation, LossSpec
from improve_nas.adanet.runtime.device_data import ROWS, DeviceData
from improve_nas.adanet.step_value import StepValue
from improve_nas.adanet.strategies import GrowStrategy, Strategy
from improve_nas.adanet.subnetwork import (
    Builder,
    EnsembleRecord,
    MemberRecord,
    float32_outputs,
    member_name,
    validate_unique_names,
)

__all__ = ["FrozenEnsemble", "IterationModel", "LossSpec"]

# The logged terms of each loss (log name -> `losses.py` term): a subnetwork's loss, a candidate ensemble's AdaNet loss
SUBNETWORK_TERMS = {"loss": "subnetwork", "cross_entropy": "ce", "distillation": "kd", "aux_head": "aux", "l2": "l2"}
ENSEMBLE_TERMS = {"adanet_loss": "adanet_loss", "cross_entropy": "ensemble_ce", "complexity": "complexity"}


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class FrozenEnsemble:
    """A chosen ensemble, live: its record, member models (weights loaded) and ensembler."""

    record: EnsembleRecord
    members: tuple[keras.Model, ...]
    ensembler: keras.layers.Layer

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))
        if len(self.members) != len(self.record.members):
            raise ValueError(f"{len(self.members)} models for {len(self.record.members)} member records")

    @classmethod
    def from_record(cls, record: EnsembleRecord, members: Sequence[keras.Model]) -> FrozenEnsemble:
        """Rebuilds the ensembler (with its mixture weights) from the record."""
        return cls(record=record, members=tuple(members), ensembler=restore_ensembler(record.ensembler))


def _sum_losses(layer: keras.layers.Layer):
    found = [ops.cast(loss, "float32") for loss in layer.losses]
    return ops.sum(ops.stack(found)) if found else ops.zeros(())


def _features_if(needed: bool, outputs: Sequence[dict]):
    return [ops.stop_gradient(o["features"]) for o in outputs] if needed else None


class IterationModel(keras.Model):
    """All candidates of AdaNet iteration `iteration`, trained together (module docstring).

    Args:
        iteration: t, 0-based.
        builders: This iteration's builders (unique names).
        num_classes: K.
        input_shape: One example's shape as fed to the model (before preprocessing).
        previous: The ensemble chosen at iteration t−1, or None at t = 0. Its members and
            ensembler are set to `trainable=False`.
        strategy: Forms the candidate ensembles (default `GrowStrategy`).
        ensembler: Mixture-weight settings for every candidate ensemble.
        loss: Subnetwork loss settings.
        preprocessing: Layer applied to each batch first, called with the model's `training`
            flag (augmentation must be the identity when `training=False`).
        track_adanet_loss_ema: Keep the EMA of each candidate's training AdaNet loss (needed for
            selection without an evaluator; makes training compute the ensembles).
        ema_decay: Decay of that EMA.
        previous_competes: The previous ensemble is a selection candidate (no `force_grow`). With
            `track_adanet_loss_ema`, its EMA is then tracked on this iteration's batches too, as
            AdaNet did, rather than taken from the iteration that trained it (which may not have
            tracked one).
        input_dtype: dtype of the model input.
        device_data: The training partition on the device (`device_data.py`). `fit` may then be fed
            `{"rows": int32 [B]}` without labels: images and labels are gathered from it in the step.

    Attributes (stable, read by the loop):
        member_names: `t{t}_{builder}` of the new subnetworks, in builder order.
        subnetworks: The new subnetwork models, in builder order.
        candidate_names: `t{t}_{candidate}` of the new candidate ensembles.
        ensemblers: One per candidate ensemble.
        selection_names: The previous ensemble's name (if any), then `candidate_names`: the
            order of `selection.select_candidate` indices.
        previous_members, previous_ensembler: The frozen previous ensemble ([] / None at t = 0).
        preprocessing: The preprocessing layer or None.
        emas: One `ZeroDebiasedEma` per candidate ensemble, or [].
        subnetwork_log_keys: New member name -> {term: key in `fit`'s logs of its value at the latest step}, for
            the `SUBNETWORK_TERMS` it has: "loss" (the total), "cross_entropy", "l2", "distillation" (with a
            teacher), "aux_head" (with aux logits).
        ensemble_log_keys: Candidate ensemble name -> {term: key} for `ENSEMBLE_TERMS` ("adanet_loss" is the total);
            {} when training does not compute the ensembles (`ensemble_loss_terms` computes them apart).
    """

    def __init__(self, *, iteration: int, builders: Sequence[Builder], num_classes: int,
                 input_shape: Sequence[int], previous: FrozenEnsemble | None = None,
                 strategy: Strategy | None = None, ensembler: EnsemblerSpec | None = None,
                 loss: LossSpec | None = None, preprocessing: keras.layers.Layer | None = None,
                 track_adanet_loss_ema: bool = False, ema_decay: float = 0.9, previous_competes: bool = False,
                 input_dtype: str = "float32", device_data: DeviceData | None = None, **kwargs):
        super().__init__(**kwargs)
        if not builders:
            raise ValueError("an iteration needs at least one builder")
        validate_unique_names([b.name for b in builders], "builder")
        self.iteration = int(iteration)
        self.num_classes = int(num_classes)
        self.builders = tuple(builders)
        self.ensembler_spec = ensembler or EnsemblerSpec()
        self.loss_spec = loss or LossSpec()
        self.member_names = [member_name(self.iteration, b.name) for b in builders]
        self._aux_members = set()  # those returning aux logits in training (`_probe`)

        self.preprocessing = preprocessing
        self.device_data = device_data
        example = keras.Input(shape=tuple(input_shape), dtype=input_dtype)
        if preprocessing is not None:
            example = preprocessing(example, training=True)
        self.subnetworks = [b.build_subnetwork(num_classes=self.num_classes, input_shape=tuple(example.shape[1:]))
                            for b in builders]
        new_dims = [self._probe(sub, example, name, training=True)
                    for sub, name in zip(self.subnetworks, self.member_names)]
        prev_dims = self._adopt_previous(previous, example)
        self._build_candidate_ensembles(strategy or GrowStrategy(), prev_dims, new_dims)

        self._teacher_mode = self.loss_spec.distillation if previous else Distillation.NONE
        self._train_ensembles = self.ensembler_spec.learns or track_adanet_loss_ema
        self.previous_ema = ZeroDebiasedEma(ema_decay, name=f"ema_{self.selection_names[0]}") \
            if previous and track_adanet_loss_ema and previous_competes else None
        self._previous_called_in_training = self._previous_needed_in_training()
        # The previous ensemble's output is read in training by adaptive distillation and by its EMA only.
        self._previous_ensemble_in_training = previous is not None and (
            self._teacher_mode is Distillation.ADAPTIVE or self.previous_ema is not None)
        self.emas = [ZeroDebiasedEma(ema_decay, name=f"ema_{n}") for n in self.candidate_names] \
            if track_adanet_loss_ema else []
        # Log keys carry no iteration number: the names of a step's outputs are part of the compiled program, and
        # iteration t's step should be the same program as iteration 0's (see `non_trainable_variables`).
        self.subnetwork_log_keys = {n: self._subnetwork_log_keys(n, b.name)
                                    for n, b in zip(self.member_names, self.builders)}
        self.ensemble_log_keys = {n: {t: f"{c.name}_adanet_loss" if t == "adanet_loss" else f"{c.name}_adanet_{t}"
                                      for t in ENSEMBLE_TERMS}
                                  for n, c in zip(self.candidate_names, self.candidates)} \
            if self._train_ensembles else {}
        self.step_values = [StepValue(key) for keys in [*self.subnetwork_log_keys.values(),
                                                        *self.ensemble_log_keys.values()] for key in keys.values()]
        self.built = True

    def _subnetwork_log_keys(self, member: str, builder: str) -> dict[str, str]:
        """Keys of the terms `member` has; its total is "<builder>_loss", as the progress bar shows it."""
        terms = [t for t in SUBNETWORK_TERMS if (t != "distillation" or self._teacher_mode is not Distillation.NONE)
                 and (t != "aux_head" or member in self._aux_members)]
        return {t: f"{builder}_loss" if t == "loss" else f"{builder}_{t}" for t in terms}

    def _adopt_previous(self, previous: FrozenEnsemble | None, example) -> list[int | None]:
        """Freezes and keeps the previous ensemble; returns its members' feature dims if needed."""
        self.previous = previous
        self.previous_members = list(previous.members) if previous else []
        self.previous_ensembler = previous.ensembler if previous else None
        for layer in [*self.previous_members, *([self.previous_ensembler] if previous else [])]:
            layer.trainable = False
        self._previous_names = [m.name for m in previous.record.members] if previous else []
        self._previous_needs_features = getattr(self.previous_ensembler, "weight_type", None) == "matrix"
        if previous and self.ensembler_spec.needs_features:
            return [self._probe(m, example, n, training=False)
                    for m, n in zip(self.previous_members, self._previous_names)]
        return [None] * len(self.previous_members)

    def _build_candidate_ensembles(self, strategy: Strategy, prev_dims, new_dims) -> None:
        """One fresh ensembler per candidate ensemble of `strategy`."""
        previous = self.previous
        self.candidates = strategy.generate_ensemble_candidates(self.builders, previous.record if previous else None)
        validate_unique_names([c.name for c in self.candidates], "ensemble candidate")
        self.candidate_names = [f"t{self.iteration}_{c.name}" for c in self.candidates]
        self.selection_names = ([previous.record.name] if previous else []) + self.candidate_names
        by_builder = {b.name: i for i, b in enumerate(self.builders)}
        self.ensemblers = []
        self._candidate_members = []  # per candidate: (previous member indices, new member indices)
        for candidate, full_name in zip(self.candidates, self.candidate_names):
            prev, new = list(candidate.previous_members), [by_builder[n] for n in candidate.builder_names]
            self._candidate_members.append((prev, new))
            self.ensemblers.append(self.ensembler_spec.build(
                num_members=len(prev) + len(new), num_classes=self.num_classes,
                feature_dims=([prev_dims[i] for i in prev] + [new_dims[i] for i in new]
                              if self.ensembler_spec.needs_features else None),
                complexities=[previous.record.members[i].complexity for i in prev]
                + [self.builders[i].complexity for i in new],
                name=f"ensembler_{full_name}"))

    def candidate_new_members(self) -> list[list[int]]:
        """Per candidate ensemble (`candidate_names` order), the indices of the new subnetworks it holds."""
        return [list(new) for _, new in self._candidate_members]

    def _previous_needed_in_training(self) -> list[int]:
        """Indices of the frozen members some training loss reads (docs/design.md §2: skip the others)."""
        needed = set()
        if self._teacher_mode is Distillation.ADAPTIVE:
            needed.update(range(len(self.previous_members)))
        elif self._teacher_mode is Distillation.BORN_AGAIN:
            needed.add(len(self.previous_members) - 1)
        if self._train_ensembles:
            for prev, _ in self._candidate_members:
                needed.update(prev)
        if self.previous_ema is not None:
            needed.update(range(len(self.previous_members)))
        return sorted(needed)

    def _idle_in_training(self) -> list[keras.layers.Layer]:
        """The layers a training step never calls: frozen members no loss reads, and ensemblers not trained."""
        idle = [m for i, m in enumerate(self.previous_members) if i not in self._previous_called_in_training]
        if self.previous and not self._previous_ensemble_in_training:
            idle.append(self.previous_ensembler)
        if not self._train_ensembles:
            idle.extend(self.ensemblers)
        return idle

    @property
    def non_trainable_variables(self):
        """All non-trainable state, except, while `fit` runs, that of the layers training never calls.

        Keras on JAX passes this list into the compiled train step and back out of it: leaving the idle layers out
        keeps iteration t's step the same program as iteration 0's (same arguments), so XLA's persistent
        compilation cache serves it, and spares every step t frozen members' weights as dead arguments.
        """
        every = super().non_trainable_variables
        if not getattr(self, "_fitting", False):
            return every
        idle = {id(v) for layer in self._idle_in_training() for v in layer.variables}
        return [v for v in every if id(v) not in idle]

    def fit(self, *args, **kwargs):
        self._fitting = True
        try:
            return super().fit(*args, **kwargs)
        finally:
            self._fitting = False

    def _probe(self, model, example, name, *, training):
        """Builds `model` symbolically (no side effects), checks its outputs, returns D or None."""
        spec = model(example, training=training)
        if not isinstance(spec, dict) or "logits" not in spec:
            raise ValueError(f"subnetwork {name} must return a dict with 'logits', got {type(spec).__name__}")
        if training and "aux_logits" in spec:
            self._aux_members.add(name)
        if spec["logits"].shape[-1] != self.num_classes:
            raise ValueError(f"subnetwork {name} returns {spec['logits'].shape[-1]} logits, expected {self.num_classes}")
        if self.ensembler_spec.needs_features and "features" not in spec:
            raise ValueError(f"matrix mixture weights need subnetwork {name} to return 'features'")
        return spec["features"].shape[-1] if "features" in spec else None

    def call(self, x, training=False):
        if isinstance(x, dict):
            x = self.device_data.images_at(x[ROWS])
        if self.preprocessing is not None:
            x = self.preprocessing(x, training=training)
        new_out = [float32_outputs(sub(x, training=training)) for sub in self.subnetworks]
        called = self._previous_called_in_training if training else range(len(self.previous_members))
        prev_out = {i: float32_outputs(self.previous_members[i](x, training=False)) for i in called}

        result = {"members": {self._previous_names[i]: o["logits"] for i, o in prev_out.items()}}
        result["members"].update({n: o["logits"] for n, o in zip(self.member_names, new_out)})
        if training:
            aux = {n: o["aux_logits"] for n, o in zip(self.member_names, new_out) if "aux_logits" in o}
            if aux:
                result["aux_logits"] = aux
            result["regularization"] = {n: _sum_losses(s) for n, s in zip(self.member_names, self.subnetworks)}

        ensembles = {}
        if self.previous and (not training or self._previous_ensemble_in_training):
            ordered = [prev_out[i] for i in range(len(self.previous_members))]
            ensembles[self.selection_names[0]] = self.previous_ensembler(
                [o["logits"] for o in ordered], _features_if(self._previous_needs_features, ordered))
        if not training or self._train_ensembles:
            for name, ensembler, (prev, new) in zip(self.candidate_names, self.ensemblers, self._candidate_members):
                outs = [prev_out[i] for i in prev] + [new_out[i] for i in new]
                ensembles[name] = ensembler([ops.stop_gradient(o["logits"]) for o in outs],
                                            _features_if(self.ensembler_spec.needs_features, outs))
        if ensembles:
            result["ensembles"] = ensembles
        return result

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum of the subnetwork losses (+ AdaNet losses when mixture weights are learned)."""
        if y is None and isinstance(x, dict):
            y = self.device_data.labels_at(x[ROWS])
        if sample_weight is not None:
            raise ValueError("IterationModel does not support sample weights")
        spec = self.loss_spec
        teacher = self._teacher_logits(y_pred)
        total = ops.zeros(())
        for i, name in enumerate(self.member_names):
            regularization = y_pred.get("regularization", {}).get(name)
            terms = losses_lib.subnetwork_loss_terms(
                labels=y, logits=y_pred["members"][name], label_smoothing=spec.label_smoothing,
                aux_logits=y_pred.get("aux_logits", {}).get(name), aux_head_weight=spec.aux_head_weight,
                teacher_logits=teacher,
                regularization=_sum_losses(self.subnetworks[i]) if regularization is None else regularization)
            total = total + terms["subnetwork"]
            self._log(self.subnetwork_log_keys[name], terms, SUBNETWORK_TERMS)
        ensembles = y_pred.get("ensembles", {})
        for j, name in enumerate(self.candidate_names):
            if name not in ensembles:
                continue
            terms = losses_lib.ensemble_loss_terms(
                labels=y, logits=ensembles[name], complexity=self.ensemblers[j].complexity_penalty())
            if self.ensembler_spec.learns:
                total = total + terms["adanet_loss"]
            self._log(self.ensemble_log_keys.get(name, {}), terms, ENSEMBLE_TERMS)
            if training and self.emas:
                self.emas[j].update(terms["adanet_loss"])
        if training and self.previous_ema is not None:
            terms = losses_lib.ensemble_loss_terms(labels=y, logits=ensembles[self.selection_names[0]],
                                                   complexity=self.previous_ensembler.complexity_penalty())
            self.previous_ema.update(terms["adanet_loss"])
        return total

    def _log(self, keys: dict[str, str], terms: dict, names: dict[str, str]) -> None:
        values = {metric.name: metric for metric in self.step_values}
        for term, key in keys.items():
            values[key].update_state(terms[names[term]])

    def ensemble_loss_terms(self, images, labels) -> dict[str, dict[str, float]]:
        """Each candidate ensemble's `ENSEMBLE_TERMS` on a batch, in inference mode: {candidate: {term: value}}.

        For the summaries when training does not compute the ensembles: computing them in the training step would
        bring the frozen members back into it (docs/design.md §2). May be called from a callback during `fit`.
        """
        if hasattr(self, "jax_state_sync"):
            self.jax_state_sync()  # JAX keeps the training state apart from the variables until `fit` ends
        ensembles = self(images, training=False)["ensembles"]
        result = {}
        for name, ensembler in zip(self.candidate_names, self.ensemblers):
            terms = losses_lib.ensemble_loss_terms(labels=labels, logits=ensembles[name],
                                                   complexity=ensembler.complexity_penalty())
            result[name] = {term: float(ops.convert_to_numpy(terms[source])) for term, source in ENSEMBLE_TERMS.items()}
        return result

    def _teacher_logits(self, y_pred):
        mode = self._teacher_mode
        if mode is Distillation.NONE:
            return None
        return losses_lib.select_teacher(
            mode,
            previous_ensemble_logits=y_pred.get("ensembles", {}).get(self.selection_names[0]),
            last_member_logits=y_pred["members"].get(self._previous_names[-1]))

    # ---- what the loop reads after training ------------------------------------------------

    def clip_groups(self) -> list[list[keras.Variable]]:
        """One group per new subnetwork: its trainable variables (mixture weights stay unclipped)."""
        return [list(sub.trainable_variables) for sub in self.subnetworks]

    def complexity_penalties(self) -> list[float]:
        """Complexity penalty of each selection candidate, aligned with `selection_names`."""
        layers = ([self.previous_ensembler] if self.previous else []) + self.ensemblers
        return [float(ops.convert_to_numpy(e.complexity_penalty())) for e in layers]

    def adanet_loss_emas(self) -> list[float]:
        """EMA of each selection candidate's training AdaNet loss (NaN where never updated)."""
        if not self.emas:
            raise ValueError("built with track_adanet_loss_ema=False: no EMA to read")
        values = [float(ops.convert_to_numpy(e.result())) for e in self.emas]
        if self.previous_ema is not None:
            values.insert(0, float(ops.convert_to_numpy(self.previous_ema.result())))
        elif self.previous:
            stored = self.previous.record.adanet_loss_ema
            values.insert(0, float("nan") if stored is None else stored)
        return values

    def _split_index(self, index: int) -> int | None:
        """Selection index -> candidate index, None for the previous ensemble."""
        if not 0 <= index < len(self.selection_names):
            raise IndexError(f"selection index {index} out of range 0..{len(self.selection_names) - 1}")
        if self.previous:
            return None if index == 0 else index - 1
        return index

    def ensemble_record(self, index: int) -> EnsembleRecord:
        """The persistable record of selection candidate `index` (mixture weights included)."""
        j = self._split_index(index)
        if j is None:
            return self.previous.record
        prev, new = self._candidate_members[j]
        members = [self.previous.record.members[i] for i in prev] + [
            MemberRecord.from_builder(self.builders[i], self.iteration) for i in new]
        ema = float(ops.convert_to_numpy(self.emas[j].result())) if self.emas else None
        return EnsembleRecord(name=self.candidate_names[j], iteration=self.iteration, members=tuple(members),
                              ensembler=serialize_ensembler(self.ensemblers[j]), adanet_loss_ema=ema)

    def frozen_ensemble(self, index: int) -> FrozenEnsemble:
        """Selection candidate `index` as live objects (these models; save their weights)."""
        j = self._split_index(index)
        if j is None:
            return self.previous
        prev, new = self._candidate_members[j]
        models = [self.previous_members[i] for i in prev] + [self.subnetworks[i] for i in new]
        return FrozenEnsemble(record=self.ensemble_record(index), members=tuple(models),
                              ensembler=self.ensemblers[j])
