"""The NAS-RL / NASNet controller: an LSTM policy over genotypes, trained by REINFORCE, one update per iteration.

Sources (read for facts; nothing copied). The published values below are as remembered, not re-read here (the
stored reference pages did not hold the papers):
    Zoph & Le, *Neural Architecture Search with Reinforcement Learning*, ICLR 2017: an RNN emits an architecture one
        decision at a time, each sampled decision fed back as the next input; REINFORCE with an exponential moving
        average of earlier rewards as the baseline; weights initialised uniformly in [-0.08, 0.08]; Adam.
    Zoph, Vasudevan, Shlens, Le, *Learning Transferable Architectures for Scalable Image Recognition*, CVPR 2018,
        appendix: a one-layer LSTM of 100 units with one softmax per decision of the normal and the reduction cell;
        learning rate 0.00035 (with PPO, not the plain REINFORCE used here), entropy penalty weight 0.00001,
        baseline decay 0.95, weights initialised uniformly in [-0.1, 0.1].

The policy. Per cell (normal, then reduction), per block: state, operation, state, operation: 4·B decisions per
cell, 8·B in all (40 for B=5; the combination is always `add` in this space, so NASNet's fifth decision is absent).
Each decision has its own softmax classifier on the LSTM output; states a block may not read are masked out. The
input of step t is an embedding of the decision taken at step t-1 (a start token at step 0).

Reward and baseline. A candidate's selection loss is the loss of the ensemble it would make with the members chosen
before it, which falls as the ensemble grows, so raw losses of different iterations are not comparable. The reward
is therefore 1 - the candidate's rank within its iteration (`proposals.iteration_ranks`: 1 for the lowest selection
loss, 0 for the highest). The baseline is an exponential moving average of the mean reward of each update,
`b <- decay * b + (1 - decay) * mean(reward)`, started at the first update's mean; the advantage is reward - b
before that update. With the rank reward the mean over any N >= 2 candidates is exactly 1/2, so the baseline is 1/2
whatever its decay: the rank already centres the reward, which is what the baseline is for. The moving average is
kept as published for a reward that is not a rank.
Loss of one update over the N rewarded candidates of the previous iteration:
    mean_n [ -(r_n - b) * sum_t log pi(a_nt) ] - entropy_weight * mean_n [ sum_t H(pi(. | a_n<t)) ]

Determinism. `controller_proposals` is a pure function of its arguments: a fresh controller's weights are drawn with
numpy from `SeedSequence([seed, _INIT_STREAM])` (never from Keras' global seed, so the same on every backend), and
sampling uses numpy on the weights (a numpy mirror of the Keras forward pass, `_sample`), from
`SeedSequence([seed, iteration, _CONTROLLER_STREAM])`. Only the REINFORCE update runs in Keras (`train_on_batch` of a
model whose `compute_loss` is the loss above), so states written by the two backends differ in their last bits,
and a state restored on the same backend proposes bit-identically.

Keras and the engine. The engine calls its generator inside an iteration: after `keras.backend.clear_session()`,
under its distribution scope, with the previous ensemble loaded. The controller's model and optimizer are built anew
in every call and run in a short-lived thread of their own (`_update`): Keras' global state (the name counters, the
dtype policy, a JAX distribution) and TensorFlow's distribution strategy are per thread, so a call leaves the
engine's layer names as they were, needs no `clear_session` of its own (which would reset the counters under the
engine's feet), and computes the same update under any distribution (a mirrored strategy would otherwise scale it).
Every name is explicit as well (the model, its weights, the optimizer). Nothing of the model outlives the call.
Cost of one update on 2 CPU cores: about 0.3 s on TensorFlow (eager), a few seconds on JAX (the step is compiled
anew each call); sampling is numpy and takes milliseconds.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import threading

import numpy as np

from improve_nas.errors import UsageError
from improve_nas.search import proposals, space

_CONTROLLER_STREAM = 3  # proposals.py uses 1 (random) and 2 (evolution)
_INIT_STREAM = 0xC0417  # SeedSequence([seed, _INIT_STREAM]) draws a fresh controller's weights
_INIT_SCALE = 0.1  # uniform in [-0.1, 0.1] (Zoph et al. 2018)
_MAX_ROUNDS = 50  # rounds of k policy samples before topping up with uniform genotypes
_STATE_FORMAT = "improve_nas.search.controller/1"
_MASKED = -1e9  # logit of a state a block may not read

# Defaults scaled for runs of 10-30 iterations of a few candidates (published values: module docstring). Learning rate
# and entropy weight tuned on the synthetic objective (15 iterations x 4 candidates, DARTS operations, 3 blocks, seeds
# 100-149 and 200-229, none of the test's): mean best distance 11.8 at (0.03, 0.01), 12.3 at (0.05, 0.01), 13.2 at
# (0.03, 0), 14.6 at (0.1, 0), 15.9 at (0.01, 0), 15.1 at (0.05, 0.1); random search 17.5. The baseline decay has no
# effect with the rank reward (the module docstring says why): NASNet's value.
DEFAULT_UNITS = 100
DEFAULT_LEARNING_RATE = 0.03
DEFAULT_ENTROPY_WEIGHT = 0.01
DEFAULT_BASELINE_DECAY = 0.95

@dataclasses.dataclass(frozen=True)
class Layout:
    """The decision sequence of one genotype over `operations` with `num_blocks` blocks per cell.

    Step 4·(B·c + i) + j is decision j of block i of cell c: j = 0, 2 the states of the first and the second pair,
    j = 1, 3 their operations. Choices are indices into the states (0 .. 1 + i) or into `operations`.
    Tokens (the LSTM inputs): 0 the start, 1 + s state s, 1 + max_states + o operation o.
    """

    operations: tuple[str, ...]
    num_blocks: int

    @property
    def max_states(self) -> int:
        return space.NUM_INPUT_STATES + self.num_blocks - 1  # the last block reads states 0 .. 2 + B - 2

    @property
    def num_steps(self) -> int:
        return 2 * self.num_blocks * 4

    @property
    def width(self) -> int:
        return max(len(self.operations), self.max_states)

    @property
    def vocabulary(self) -> int:
        return 1 + self.max_states + len(self.operations)

    def is_state(self, step: int) -> bool:
        return step % 2 == 0

    def num_choices(self, step: int) -> int:
        block = (step // 4) % self.num_blocks
        return space.NUM_INPUT_STATES + block if self.is_state(step) else len(self.operations)

    def mask(self) -> np.ndarray:
        """[steps, width] bool: which choices each decision has."""
        return np.arange(self.width)[None, :] < np.array([self.num_choices(t) for t in range(self.num_steps)])[:, None]

    def token(self, step: int, choice: int) -> int:
        return 1 + choice if self.is_state(step) else 1 + self.max_states + choice

    def inputs(self, actions: np.ndarray) -> np.ndarray:
        """[n, steps] int32 LSTM inputs for [n, steps] actions: the start token, then each previous decision."""
        tokens = np.zeros(actions.shape, np.int32)
        for step in range(1, self.num_steps):
            tokens[:, step] = [self.token(step - 1, int(a)) for a in actions[:, step - 1]]
        return tokens

    def encode(self, genotype: space.Genotype) -> np.ndarray | None:
        """The actions that emit `genotype`, or None if the policy cannot (other blocks, operations or output)."""
        actions = []
        for cell in genotype.cells:
            if cell.num_blocks != self.num_blocks or cell.concat is not None:
                return None
            for block in cell.blocks:
                for operation, state in block:
                    if operation not in self.operations:
                        return None
                    actions += [state, self.operations.index(operation)]
        return np.array(actions, np.int32)

    def decode(self, actions) -> space.Genotype:
        cells, per_cell = [], 4 * self.num_blocks
        for c in range(2):
            a = [int(x) for x in actions[c * per_cell:(c + 1) * per_cell]]
            cells.append(space.Cell(tuple(((self.operations[a[4 * i + 1]], a[4 * i]),
                                           (self.operations[a[4 * i + 3]], a[4 * i + 2]))
                                          for i in range(self.num_blocks))))
        return space.Genotype(*cells)


def _initial_weights(seed: int, layout: Layout, units: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _INIT_STREAM]))
    shapes = _weight_shapes(layout, units)
    return {name: (np.zeros(shape, np.float32) if name.endswith("bias") else
                   rng.uniform(-_INIT_SCALE, _INIT_SCALE, shape).astype(np.float32)) for name, shape in shapes.items()}


def _weight_shapes(layout: Layout, units: int) -> dict[str, tuple[int, ...]]:
    # The previous decision's embedding enters the LSTM gates directly: an embedding followed by the LSTM's input
    # kernel is one table of the same function class, with fewer weights to store and fewer ops per step.
    return {"embedding": (layout.vocabulary, 4 * units), "recurrent_kernel": (units, 4 * units), "bias": (4 * units,),
            "head_kernel": (layout.num_steps, units, layout.width), "head_bias": (layout.num_steps, layout.width)}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm_step(w: dict, x, h, c):
    """One LSTM step, gates in Keras' order (input, forget, cell, output); mirrors `_network`'s."""
    i, f, g, o = np.split(x + h @ w["recurrent_kernel"] + w["bias"], 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sample(w: dict, layout: Layout, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, steps] actions drawn from the policy, each decision fed back as the next input (numpy, float64)."""
    w = {name: value.astype(np.float64) for name, value in w.items()}
    units = w["recurrent_kernel"].shape[0]
    h, c = np.zeros((n, units)), np.zeros((n, units))
    token = np.zeros(n, np.int64)
    actions = np.zeros((n, layout.num_steps), np.int32)
    for step in range(layout.num_steps):
        h, c = _lstm_step(w, w["embedding"][token], h, c)
        logits = h @ w["head_kernel"][step] + w["head_bias"][step]
        logits[:, layout.num_choices(step):] = -np.inf
        p = np.exp(_log_softmax(logits))
        cumulative = np.cumsum(p, axis=-1)
        draws = rng.random(n)[:, None] * cumulative[:, -1:]
        actions[:, step] = np.minimum((cumulative <= draws).sum(axis=-1), layout.num_choices(step) - 1)
        token = np.array([layout.token(step, int(a)) for a in actions[:, step]])
    return actions


def log_probability(state: dict, genotype: space.Genotype) -> float:
    """log pi(genotype) under a controller state (numpy, float64): the sum of its decisions' log-probabilities."""
    layout, units, w, _ = _unpack(state)
    actions = layout.encode(genotype)
    if actions is None:
        raise UsageError(f"the controller ({len(layout.operations)} operations, {layout.num_blocks} blocks) cannot "
                         f"emit {genotype.text()}")
    w = {name: value.astype(np.float64) for name, value in w.items()}
    inputs = layout.inputs(actions[None, :])[0]
    h, c, total = np.zeros(units), np.zeros(units), 0.0
    for step in range(layout.num_steps):
        h, c = _lstm_step(w, w["embedding"][inputs[step]], h, c)
        logits = h @ w["head_kernel"][step] + w["head_bias"][step]
        total += float(_log_softmax(logits[:layout.num_choices(step)])[actions[step]])
    return total


def _network(layout: Layout, units: int, entropy_weight: float):
    """The Keras model of the policy: logits of every decision given the previous ones (teacher forcing)."""
    import keras
    from keras import ops

    mask = layout.mask()

    class ControllerNetwork(keras.Model):
        def __init__(self):
            super().__init__(name="nas_controller", dtype="float32")  # whatever the global dtype policy
            self.w = {name: self.add_weight(shape=shape, initializer="zeros", name=name)
                      for name, shape in _weight_shapes(layout, units).items()}
            self.built = True

        def call(self, tokens):
            w = self.w
            inputs = ops.take(w["embedding"], tokens, axis=0) + w["bias"]  # [n, steps, 4u]

            def step(state, x):  # state: [h, c] concatenated, also the output (Keras' TF scan wants ys like it)
                h, c = state[:, :units], state[:, units:]
                i, f, g, o = ops.split(x + ops.matmul(h, w["recurrent_kernel"]), 4, axis=-1)
                c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
                state = ops.concatenate([ops.sigmoid(o) * ops.tanh(c), c], axis=-1)
                return state, state

            zeros = ops.zeros((ops.shape(tokens)[0], 2 * units))
            _, states = ops.scan(step, zeros, ops.transpose(inputs, (1, 0, 2)))  # [steps, n, 2u]
            outputs = states[:, :, :units]
            # one softmax classifier per decision
            logits = ops.einsum("tnu,tuw->ntw", outputs, w["head_kernel"]) + w["head_bias"]
            return ops.where(mask, logits, _MASKED)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            # y: [n, steps] the decisions taken; sample_weight: [n] their advantages
            log_p = ops.log_softmax(y_pred, axis=-1)
            taken = ops.sum(ops.one_hot(ops.cast(y, "int32"), layout.width) * log_p, axis=(1, 2))
            entropy = -ops.sum(ops.where(mask, ops.exp(log_p) * log_p, 0.0), axis=(1, 2))
            return -ops.mean(ops.cast(sample_weight, taken.dtype) * taken) - entropy_weight * ops.mean(entropy)

    return ControllerNetwork()


def _update(*args) -> tuple[dict, dict]:
    """`_update_in_keras` in a thread of its own: Keras' global state (name counters, dtype policy, distribution)
    and TensorFlow's distribution strategy are per thread, so the caller's scope neither reaches the update (a
    mirrored strategy would change it) nor sees it."""
    outcome = {}

    def run():
        try:
            outcome["value"] = _update_in_keras(*args)
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name="nas_controller_update")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _update_in_keras(w: dict, optimizer_state: dict, layout: Layout, units: int, actions: np.ndarray,
                     advantages: np.ndarray, learning_rate: float, entropy_weight: float) -> tuple[dict, dict]:
    """One REINFORCE step in Keras; returns the new weights and Adam's variables (without the learning rate)."""
    import keras

    model = _network(layout, units, entropy_weight)
    tokens = layout.inputs(actions)
    for name, variable in model.w.items():
        variable.assign(w[name])
    # Each call builds a new model, so its one step is traced anew. TensorFlow: eager is faster than tracing.
    # JAX: eager would compile every primitive of the step on its first use (tens of seconds again after each
    # iteration's `jax.clear_caches()`), so the step is compiled as one program.
    eager = keras.backend.backend() != "jax"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate, name="controller_adam"),
                  run_eagerly=eager, jit_compile=not eager)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    variables = _optimizer_variables(optimizer)
    for name, variable in variables.items():
        if name in optimizer_state:
            variable.assign(optimizer_state[name])
    model.train_on_batch(tokens, actions, sample_weight=advantages.astype(np.float32))
    new_w = {name: np.array(keras.ops.convert_to_numpy(variable), np.float32) for name, variable in model.w.items()}
    new_optimizer = {name: np.array(keras.ops.convert_to_numpy(variable))
                     for name, variable in _optimizer_variables(optimizer).items()}
    return new_w, new_optimizer


def _optimizer_variables(optimizer) -> dict:
    """Adam's variables by path, without the learning rate (the call's argument decides it)."""
    return {variable.path: variable for variable in optimizer.variables if variable.name != "learning_rate"}


def _pack(layout: Layout, units: int, w: dict, optimizer_state: dict, baseline: float | None, updates: int) -> dict:
    buffer = io.BytesIO()
    np.savez(buffer, **{f"w/{k}": v for k, v in w.items()},  # uncompressed: trained floats do not compress
             **{f"adam/{k}": v for k, v in optimizer_state.items()})
    return {"format": _STATE_FORMAT, "operations": list(layout.operations), "num_blocks": layout.num_blocks,
            "units": units, "baseline": baseline, "updates": updates,
            "arrays": base64.b64encode(buffer.getvalue()).decode("ascii")}


def _unpack(state: dict) -> tuple[Layout, int, dict, dict]:
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise UsageError(f"controller state must be a dict of format {_STATE_FORMAT!r} (what controller_proposals "
                         f"returned); got {str(state)[:80]!r}")
    with np.load(io.BytesIO(base64.b64decode(state["arrays"]))) as arrays:
        w = {k[2:]: arrays[k] for k in arrays.files if k.startswith("w/")}
        adam = {k[5:]: arrays[k] for k in arrays.files if k.startswith("adam/")}
    return Layout(tuple(state["operations"]), int(state["num_blocks"])), int(state["units"]), w, adam


def _rewarded(history, iteration: int, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Actions and rewards (1 - rank within the iteration) of the candidates of `iteration` with a finite loss."""
    entries = [(it, genotype, loss) for it, genotype, loss in proposals.parse_history(history)
               if it == iteration and math.isfinite(loss) and layout.encode(genotype) is not None]
    ranks = proposals.iteration_ranks(entries)
    actions = np.array([layout.encode(genotype) for _, genotype, _ in entries], np.int32).reshape(
        len(entries), layout.num_steps)
    return actions, 1.0 - np.array(ranks, np.float64)


def controller_proposals(seed: int, iteration: int, history, k: int, op_set: str, *, state: dict | None = None,
                         num_blocks: int = space.DEFAULT_NUM_BLOCKS, units: int = DEFAULT_UNITS,
                         learning_rate: float = DEFAULT_LEARNING_RATE, entropy_weight: float = DEFAULT_ENTROPY_WEIGHT,
                         baseline_decay: float = DEFAULT_BASELINE_DECAY) -> tuple[list[space.Genotype], dict]:
    """K genotypes from the controller after one REINFORCE update on the previous iteration's candidates.

    Args:
        seed: The run's seed: a fresh controller's weights come from it alone.
        iteration: The iteration to propose for; the update uses the candidates of `iteration - 1`.
        history: Every candidate trained so far (`proposals` module docstring). Entries whose selection loss is None
            or NaN, or whose genotype the policy cannot emit, give no reward; with fewer than 2 rewarded
            candidates in `iteration - 1` there is no update.
        k: Candidates to propose: distinct, none equivalent (`Genotype.digest`) to one in the history.
        op_set: The operation set (`space.OP_SETS`).
        state: None at the start of a run (a fresh controller), else the `new_state` of the previous call.
        num_blocks, units: B and the LSTM width (NASNet: 5 and 100).
        learning_rate: Adam's (NASNet: 0.00035 with PPO over thousands of architectures; here runs see 10-30
            updates, so a much larger step is needed for the policy to move at all).
        entropy_weight: Weight of the entropy bonus (NASNet: 0.00001).
        baseline_decay: Of the moving-average baseline (NASNet: 0.95; no effect with the rank reward, module
            docstring).

    Returns:
        The proposals and the new state: a JSON-serialisable dict (weights and Adam's variables as a base64 npz, the
        baseline, the update count); passing it to the next call continues the run bit-identically on the same
        backend. If the policy has become so sure that `_MAX_ROUNDS` rounds of k samples hold fewer than k new
        genotypes, uniform samples fill the rest.
    """
    k, rng = proposals._check_k(k), proposals._rng(seed, iteration, _CONTROLLER_STREAM)
    operations = space.op_set(op_set)
    for name, value in (("num_blocks", num_blocks), ("units", units)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1; got {value!r}")
    if not learning_rate > 0 or not entropy_weight >= 0 or not 0 <= baseline_decay < 1:
        raise UsageError(f"controller learning_rate must be > 0, entropy_weight >= 0 and baseline_decay in [0, 1); "
                         f"got {learning_rate}, {entropy_weight}, {baseline_decay}")
    layout = Layout(operations, int(num_blocks))
    if state is None:
        w, adam, baseline, updates = _initial_weights(seed, layout, int(units)), {}, None, 0
    else:
        stored, stored_units, w, adam = _unpack(state)
        if (stored, stored_units) != (layout, units):
            raise UsageError(f"the controller state is for {stored_units} units, {stored.num_blocks} blocks and "
                             f"operations {', '.join(stored.operations)}; got units={units}, "
                             f"num_blocks={num_blocks}, op_set={op_set!r}")
        baseline, updates = state["baseline"], int(state["updates"])
    actions, rewards = _rewarded(history, iteration - 1, layout)
    if len(rewards) >= 2:
        if baseline is None:
            baseline = float(rewards.mean())
        w, adam = _update(w, adam, layout, int(units), actions, rewards - baseline, learning_rate, entropy_weight)
        baseline = float(baseline_decay * baseline + (1 - baseline_decay) * rewards.mean())
        updates += 1
    seen = {genotype.digest() for _, genotype, _ in proposals.parse_history(history)}
    chosen = []
    for _ in range(_MAX_ROUNDS):
        for row in _sample(w, layout, k, rng):
            genotype = layout.decode(row)
            if genotype.digest() not in seen and len(chosen) < k:
                seen.add(genotype.digest())
                chosen.append(genotype)
        if len(chosen) == k:
            break
    if len(chosen) < k:
        chosen += proposals.random_proposals(seed, iteration, [*history, *(
            proposals.history_entry(iteration, g, math.nan) for g in chosen)], k - len(chosen), op_set, num_blocks)
    return chosen, _pack(layout, int(units), w, adam, baseline, updates)
