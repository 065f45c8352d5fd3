"""Optimizers with TF1 semantics, per-iteration cosine schedules and per-candidate clipping (docs/original_code.md §4).

`make_optimizer` returns one Keras optimizer for a whole iteration model. Because the candidates'
parameter sets are disjoint and every optimizer here is element-wise, one optimizer over all
variables equals AdaNet's one-optimizer-per-candidate, except for gradient clipping: AdaNet clips
each candidate's gradients by *that candidate's* global norm. `clip_groups` reproduces this: each
group (one per candidate subnetwork) is clipped by its own global norm, and variables in no group
(mixture weights) are never clipped. Clipping happens in `apply`, which both backends go through
(TensorFlow via `apply_gradients`, JAX via `stateless_apply`).

Loss scaling (float16 training): `make_optimizer(..., loss_scaling=True)` wraps the optimizer in Keras'
`LossScaleOptimizer`, which multiplies the loss by a dynamic scale, divides the gradients by it, and only then calls
the wrapped optimizer's `apply`: clipping by group norm sees the true, unscaled gradients (a step with non-finite
gradients is skipped and halves the scale, without advancing `iterations`).

Schedules read the optimizer's own step counter (`optimizer.iterations`), so a fresh optimizer per
iteration restarts the cosine at `learning_rate` (docs/original_code.md §10, pitfall 4), and restoring the optimizer's
variables on resume continues it where it stopped.

Names (case-insensitive) and what they build:
    adagrad    Adagrad, initial accumulator 0.1, no epsilon (TF1)
    adam       Adam, β1 0.9, β2 0.999, ε 1e-8 (the same update form as TF1)
    lazy_adam  Adam: TF1's LazyAdam differs only on sparse (IndexedSlices) gradients, and Keras
               models here produce dense ones
    momentum   TF1Momentum, 0.9, not Nesterov: `a ← 0.9·a + g; w ← w − lr·a`
    rmsprop    RMSprop, ρ 0.9, momentum 0, ε 1e-10, mean-square slot starting at 1 as in TF1
    sgd        plain gradient descent
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from improve_nas.adanet.choices import LEARNING_RATE_SCHEDULES as SCHEDULES
from improve_nas.errors import UsageError


@keras.saving.register_keras_serializable(package="improve_nas")
class TF1Momentum(keras.optimizers.Optimizer):
    """TF1 `MomentumOptimizer`: `a ← m·a + g; w ← w − lr·a` (no Nesterov).

    Keras `SGD(momentum=m)` folds the learning rate into the velocity (`v ← m·v − lr·g`), which
    differs from this as soon as the learning rate changes between steps (docs/original_code.md §10, pitfall 5).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, name="tf1_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._accumulations = self.add_optimizer_variables(variables, "accumulation")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        accumulation = self._accumulations[self._get_variable_index(variable)]
        new_accumulation = ops.add(ops.multiply(accumulation, self.momentum), gradient)
        self.assign(accumulation, new_accumulation)
        self.assign_sub(variable, ops.multiply(learning_rate, new_accumulation))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="improve_nas")
class TF1RMSprop(keras.optimizers.RMSprop):
    """Keras RMSprop with TF1's mean-square slot initialised to ones instead of zeros."""

    def add_optimizer_variables(self, trainable_variables, name, initializer="zeros"):
        if name == "velocity":
            initializer = "ones"
        return super().add_optimizer_variables(trainable_variables, name, initializer=initializer)


@keras.saving.register_keras_serializable(package="improve_nas")
class LossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' `LossScaleOptimizer` whose `build` may be called again (the loop builds before restoring a checkpoint).

    Keras' own creates its scale variables anew on every `build`, so a second call would change the optimizer's
    variable list (and checkpoints would no longer match it).
    """

    def build(self, var_list):
        if not self.built:
            super().build(var_list)


class GroupClipping:
    """Optimizer mixin: clips each variable group's gradients by the group's own global norm.

    Groups hold variables (matched by identity); ungrouped variables are not clipped. Scaling is
    TF1's `clip_by_global_norm`: `g · clip_norm / max(‖group‖, clip_norm)`.
    """

    def __init__(self, *args, clip_norm: float | None = None, clip_groups=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_norm = clip_norm
        self.set_clip_groups(clip_groups)

    def set_clip_groups(self, groups: Sequence[Sequence[keras.Variable]]) -> None:
        group_of = {}
        for index, group in enumerate(groups):
            for variable in group:
                if id(variable) in group_of:
                    raise ValueError(f"variable {variable.path} is in two clip groups")
                group_of[id(variable)] = index
        self._clip_group_of = group_of

    def apply(self, grads, trainable_variables=None):
        if self.clip_norm and self._clip_group_of and len(grads):
            variables = self._trainable_variables if trainable_variables is None else trainable_variables
            grads = clip_by_group_global_norm(grads, list(variables), self._clip_group_of, self.clip_norm)
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "clip_norm": self.clip_norm}


def clip_by_group_global_norm(grads, variables, group_of: dict[int, int], clip_norm: float) -> list:
    """Returns `grads` with each group scaled by its own global norm; None and ungrouped untouched."""
    members: dict[int, list[int]] = {}
    for i, (grad, variable) in enumerate(zip(grads, variables)):
        group = group_of.get(id(variable))
        if grad is not None and group is not None:
            members.setdefault(group, []).append(i)
    clipped = list(grads)
    for indices in members.values():
        squares = [ops.sum(ops.square(ops.cast(grads[i], "float32"))) for i in indices]
        norm = ops.sqrt(ops.sum(ops.stack(squares)))
        scale = clip_norm / ops.maximum(norm, clip_norm)
        for i in indices:
            clipped[i] = grads[i] * ops.cast(scale, grads[i].dtype)
    return clipped


def _clipped(base: type) -> type:
    return type(f"GroupClipped{base.__name__}", (GroupClipping, base), {})


# name -> (optimizer class with group clipping, fixed TF1 hyperparameters)
_OPTIMIZERS = {
    "adagrad": (_clipped(keras.optimizers.Adagrad), {"initial_accumulator_value": 0.1, "epsilon": 0.0}),
    "adam": (_clipped(keras.optimizers.Adam), {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}),
    "lazy_adam": (_clipped(keras.optimizers.Adam), {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}),
    "momentum": (_clipped(TF1Momentum), {"momentum": 0.9}),
    "rmsprop": (_clipped(TF1RMSprop), {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-10}),
    "sgd": (_clipped(keras.optimizers.SGD), {"momentum": 0.0}),
}
OPTIMIZER_NAMES = tuple(_OPTIMIZERS)


def make_learning_rate(learning_rate: float, *, schedule: str = "constant", decay_steps: int | None = None):
    """`constant`: `lr0`; `cosine`: `lr0·0.5·(1 + cos(π·min(k, T)/T))`, k = the optimizer's step."""
    schedule_name = schedule.lower()
    if schedule_name == "constant":
        return float(learning_rate)
    if schedule_name == "cosine":
        if not decay_steps or decay_steps <= 0:
            raise UsageError(f"the cosine learning-rate schedule needs decay_steps > 0, got {decay_steps!r}")
        return keras.optimizers.schedules.CosineDecay(float(learning_rate), int(decay_steps), alpha=0.0)
    raise UsageError(f"unknown learning_rate_schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_optimizer(
    name: str,
    *,
    learning_rate: float,
    schedule: str = "constant",
    decay_steps: int | None = None,
    clip_norm: float | None = None,
    clip_groups: Sequence[Sequence[keras.Variable]] = (),
    loss_scaling: bool = False,
) -> keras.optimizers.Optimizer:
    """Returns a fresh optimizer (fresh slots and step counter) for one iteration.

    Args:
        name: One of `OPTIMIZER_NAMES`, case-insensitive.
        learning_rate: lr0, for subnetworks and mixture weights alike.
        schedule: `constant` or `cosine`.
        decay_steps: T of the cosine schedule: the iteration's number of steps.
        clip_norm: Global-norm clip per group; None or <= 0 disables clipping.
        clip_groups: One sequence of variables per candidate subnetwork (e.g.
            `IterationModel.clip_groups()`); can also be set later with `set_clip_groups`.
        loss_scaling: Wrap it in a `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling, for float16
            compute); `inner_optimizer(optimizer)` returns the wrapped one.
    """
    try:
        cls, fixed = _OPTIMIZERS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZER_NAMES)}") from None
    lr = make_learning_rate(learning_rate, schedule=schedule, decay_steps=decay_steps)
    clip = float(clip_norm) if clip_norm and clip_norm > 0 else None
    optimizer = cls(learning_rate=lr, clip_norm=clip, clip_groups=clip_groups, **fixed)
    return LossScaleOptimizer(optimizer) if loss_scaling else optimizer


def needs_loss_scaling(models: Sequence[keras.layers.Layer]) -> bool:
    """Whether any layer of `models` computes in float16 (whose small gradients underflow without loss scaling)."""
    return any(layer.dtype_policy.compute_dtype == "float16"
               for model in models for layer in model._flatten_layers(include_self=True, recursive=True))


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that updates the variables: `optimizer` itself, or the one a `LossScaleOptimizer` wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)
