"""The AdaNet iteration loop: train candidates, select, freeze, evaluate, publish; resume where a run stopped.

`grow_ensemble` knows nothing of NASNet or images: it takes a generator of subnetwork builders, numpy partitions, and
a factory for the preprocessing layer. Per iteration t (docs/design.md §3):

1. ask the generator for iteration t's candidates (`propose_candidates`: its state stored with t−1, and the record of
   every candidate trained so far, for a generator that reads it), outside any distribution scope;
2. start from a clean Keras state, seeded from (seed, t), load the ensemble chosen at t−1 from disk (frozen), and
   build the fused `IterationModel` of the candidates and one optimizer with per-candidate clipping;
3. restore the newest mid-iteration checkpoint, if any, and train the remaining steps in `fit` chunks, writing a
   checkpoint after each chunk (every `checkpoint_steps` steps or `checkpoint_secs` seconds);
4. select the best candidate ensemble (docs/original_code.md §6.7), evaluate it and its members on the test partition;
   record every candidate (`CandidateRecord`: its selection loss, own loss, accuracy and calibration on the
   selection partition, size, whether it was chosen) in the report entry's `subnetworks`;
5. publish `iterations/<t>/` whole (architecture, report entry, new members, with `keep_pool` the candidate pool:
   every candidate's own logits on the selection and test rows, and the unchosen ones' models) and drop the
   checkpoints;
6. with `early_stopping_patience`, end the run when the chosen ensemble's selection loss has stopped improving
   (`stopping.py`, a function of the published summaries, so a rerun reaches the same decision and trains nothing).

Re-running on the same directory skips every published iteration, and continues an unfinished one from its newest
checkpoint at the same step, learning-rate position and batch.

`settings.distribution` picks the devices: one, or data parallel over all local ones (`distribution.py`); each
iteration runs inside its scope.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from collections.abc import Callable

import keras
import numpy as np

from improve_nas.adanet import stopping
from improve_nas.adanet.ensemble_model import EnsembleModel
from improve_nas.adanet.ensemblers import EnsemblerSpec, MeanEnsembler
from improve_nas.adanet.iteration_model import FrozenEnsemble, IterationModel, LossSpec
from improve_nas.adanet.optimizers import make_optimizer, needs_loss_scaling
from improve_nas.adanet.runtime import checkpoints
from improve_nas.adanet.runtime import pool as candidate_pool
from improve_nas.adanet.runtime.batches import train_batches, train_rows
from improve_nas.adanet.runtime.callbacks import IterationProgress, StopEvery
from improve_nas.adanet.runtime.device_data import ROWS, DeviceData
from improve_nas.adanet.runtime.distribution import Distribution, make_distribution
from improve_nas.adanet.runtime.evaluation import evaluate, scale_temperature
from improve_nas.adanet.runtime.inference import BatchedPredictor, default_inference_batch_size
from improve_nas.adanet.runtime.memory import released_after
from improve_nas.adanet.runtime.run_directory import RunDirectory
from improve_nas.adanet.selection import (
    Selection,
    SelectionPass,
    evaluate_selection,
    needs_selection_losses,
    select_candidate,
)
from improve_nas.adanet.strategies import Strategy, make_strategy
from improve_nas.adanet.subnetwork import Builder, CandidateRecord, EnsembleRecord, Generator


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """What the loop needs to know; plain values, no model or data specifics."""

    num_iterations: int
    iteration_steps: int
    batch_size: int
    optimizer: str = "momentum"
    learning_rate: float = 0.025
    schedule: str = "cosine"
    clip_norm: float = 5.0
    loss: LossSpec = dataclasses.field(default_factory=LossSpec)
    # How candidates mix their members; a subclass may override `build` to return a layer of its own (registered
    # with Keras, as the chosen one is stored through `ensemblers.serialize_ensembler`)
    ensembler: EnsemblerSpec = dataclasses.field(default_factory=EnsemblerSpec)
    # A name of `strategies.STRATEGIES`, or a `Strategy` instance (a custom one: candidate ensembles of its own)
    strategy: str | Strategy = "grow"
    force_grow: bool = True
    use_evaluator: bool = True  # selection on the selection partition; False: EMA of the training AdaNet loss
    evaluator_batch_size: int = 32
    evaluator_steps: int | None = None
    eval_batch_size: int = 32
    eval_steps: int | None = None
    # Images per inference call in selection and evaluation (a speed setting, inference.py); None: 1,024 on an
    # accelerator, 128 on a CPU. Halved when it runs out of memory.
    inference_batch_size: int | None = None
    checkpoint_steps: int = 0  # one of these two is non-zero
    checkpoint_secs: int = 600
    keep_checkpoint_max: int = 5
    seed: int = 0
    verbose: bool = True
    # XLA: JAX always compiles; on TensorFlow, XLA tracing of a NASNet costs more than it saves on CPU
    jit_compile: bool | str = "auto"
    distribution: str = "none"  # none | mirrored: data parallel over all local devices (distribution.py)
    # The training partition lives on the device and batches are gathered there (device_data.py); False feeds numpy
    # batches from a Python generator instead (for a partition too large for device memory)
    data_on_device: bool = True
    # Fit a temperature for the chosen ensemble on the selection partition each iteration (`summary`'s
    # "temperature_scaling"); the export divides the final ensemble's logits by it
    temperature_scaling: bool = False
    # Stop once the chosen ensemble's selection loss has not improved by more than `early_stopping_min_delta`
    # (absolute) for this many iterations in a row (stopping.py); 0: train every iteration
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.001
    # Keep every candidate of each iteration, chosen or not: its model and its own logits on the selection and test
    # rows (`iterations/<t>/pool/`, pool.py), for choosing other ensembles later without training
    keep_pool: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Partitions:
    """Numpy data of a run: training, selection (the training partition itself, or a holdout) and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_select: np.ndarray
    y_select: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


PreprocessingFactory = Callable[[int], keras.layers.Layer]  # seed -> layer (augments only when training)
# (model, iteration, start step within the iteration) -> extra Keras callbacks for its `fit` calls
CallbackFactory = Callable[[IterationModel, int, int], list]


def grow_ensemble(*, run_dir: RunDirectory, settings: EngineSettings, generator: Generator, data: Partitions,
                  make_preprocessing: PreprocessingFactory, make_callbacks: CallbackFactory | None = None,
                  on_iteration_end: Callable[[dict], None] | None = None,
                  on_write: Callable[[], None] | None = None) -> list[dict]:
    """Runs (or resumes) every iteration; returns the report entries of all finished iterations.

    `on_write` is called after every checkpoint and every published iteration (e.g. to upload the run directory).
    It may raise to stop the run (e.g. on preemption): what it was called for is saved, and a rerun resumes there.
    """
    finished = run_dir.verify()  # one line naming a damaged file; drops checkpoints of finished iterations
    if finished and settings.verbose:
        print(f"{len(finished)} of {settings.num_iterations} iterations already finished in {run_dir.path}",
              flush=True)
    # Decided by an earlier session (from the same summaries): nothing more to train
    if 0 < len(finished) < settings.num_iterations and _stops_early(run_dir.summaries(), settings):
        return run_dir.summaries()
    distribution = make_distribution(settings.distribution, batch_size=settings.batch_size)
    # One for the run: a size halved for lack of memory stays halved in later iterations.
    predict = BatchedPredictor(settings.inference_batch_size or default_inference_batch_size(),
                               multiple_of=distribution.num_replicas,
                               on_shrink=lambda message: print(message, flush=True) if settings.verbose else None)
    device_data = None
    for iteration in range(len(finished), settings.num_iterations):
        # Outside the distribution scope: a generator may build and train Keras models of its own (a controller)
        builders = propose_candidates(generator, run_dir, iteration)
        keras.backend.clear_session()  # makes layer names reproducible, whatever the generator built
        # distribution.scope() is entered after clear_session, which would forget a JAX distribution
        with released_after(), distribution.scope():
            if settings.data_on_device and device_data is None:  # uploaded once, used by every iteration
                device_data = DeviceData(data.x_train, data.y_train, name="training_data")
            summary = _run_iteration(iteration, builders, run_dir=run_dir, settings=settings, generator=generator,
                                     data=data,
                                     make_preprocessing=make_preprocessing, make_callbacks=make_callbacks,
                                     on_write=on_write or (lambda: None), distribution=distribution,
                                     device_data=device_data, predict=predict)
        if settings.verbose:
            print(_summary_line(summary, settings.num_iterations), flush=True)
        if on_iteration_end is not None:
            on_iteration_end(summary)
        if iteration < settings.num_iterations - 1 and _stops_early(run_dir.summaries(), settings):
            break
    return run_dir.summaries()


def _stops_early(summaries: list[dict], settings: EngineSettings) -> bool:
    """Whether early stopping ends the run after `summaries` (saying why when verbose)."""
    stop = stopping.decide(summaries, patience=settings.early_stopping_patience,
                           min_delta=settings.early_stopping_min_delta)
    if stop is not None and settings.verbose:
        print(stop.explain(settings.num_iterations), flush=True)
    return stop is not None


def load_final_ensemble(run_dir: RunDirectory) -> FrozenEnsemble:
    finished = run_dir.finished_iterations()
    if not finished:
        raise ValueError(f"no finished iteration in {run_dir.path}")
    return run_dir.load_ensemble(finished[-1])


def propose_candidates(generator: Generator, run_dir: RunDirectory, iteration: int) -> list[Builder]:
    """The builders `generator` proposes for `iteration`, from its state and the record of the finished iterations.

    The state is the one stored with iteration `iteration - 1`, so a rerun proposes exactly what the first run did.
    """
    previous = None
    if iteration:
        architecture = run_dir.architecture(iteration - 1)
        generator.load_state_dict(architecture["generator_state"])
        previous = EnsembleRecord.from_dict(architecture["ensemble"])
    if _takes_history(generator):
        return generator.generate_candidates(previous, iteration, history=run_dir.candidate_history(iteration))
    return generator.generate_candidates(previous, iteration)


def _takes_history(generator: Generator) -> bool:
    parameters = inspect.signature(generator.generate_candidates).parameters.values()
    return any(p.name == "history" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _run_iteration(iteration: int, builders: list[Builder], *, run_dir: RunDirectory, settings: EngineSettings,
                   generator: Generator, data: Partitions, make_preprocessing: PreprocessingFactory,
                   make_callbacks: CallbackFactory | None, on_write: Callable[[], None],
                   distribution: Distribution, device_data: DeviceData | None, predict: BatchedPredictor) -> dict:
    iteration_seed = derive_seed(settings.seed, iteration)
    keras.utils.set_random_seed(iteration_seed)
    previous = run_dir.load_ensemble(iteration - 1) if iteration else None
    num_selection = len(make_strategy(settings.strategy).generate_ensemble_candidates(
        builders, previous.record if previous else None)) + (1 if previous else 0)
    selects = needs_selection_losses(num_candidates=num_selection, has_previous=previous is not None,
                                     force_grow=settings.force_grow)
    # Early stopping judges the chosen ensemble's selection loss, so it is measured even where selection needs none
    measures = selects or settings.early_stopping_patience > 0
    model = IterationModel(
        iteration=iteration, builders=builders, num_classes=data.num_classes, input_shape=data.x_train.shape[1:],
        previous=previous, strategy=make_strategy(settings.strategy), ensembler=settings.ensembler,
        loss=settings.loss, preprocessing=make_preprocessing(iteration_seed),
        track_adanet_loss_ema=measures and not settings.use_evaluator, previous_competes=not settings.force_grow,
        input_dtype=str(data.x_train.dtype),
        device_data=device_data, name=f"iteration_{iteration}")
    model.compile(jit_compile=settings.jit_compile, optimizer=make_optimizer(
        settings.optimizer, learning_rate=settings.learning_rate, schedule=settings.schedule,
        decay_steps=settings.iteration_steps, clip_norm=settings.clip_norm, clip_groups=model.clip_groups(),
        loss_scaling=needs_loss_scaling(model.subnetworks)))  # float16 candidates: dynamic loss scaling

    with distribution.training(model):
        train_seconds = _train(model, iteration, run_dir=run_dir, settings=settings, data=data, seed=iteration_seed,
                               make_callbacks=make_callbacks, on_write=on_write)

    evaluated: dict[str, SelectionPass] = {}

    def selection_losses() -> list[float]:
        if not settings.use_evaluator:
            return model.adanet_loss_emas()
        evaluated["pass"] = evaluate_selection(
            distribution.for_inference(model), data.x_select, data.y_select, batch_size=settings.evaluator_batch_size,
            steps=settings.evaluator_steps, predict=predict)
        return evaluated["pass"].losses

    selection = select_candidate(num_candidates=len(model.selection_names), has_previous=previous is not None,
                                 force_grow=settings.force_grow, losses=selection_losses)
    if measures and not selection.evaluated:
        selection = Selection(index=selection.index, losses=tuple(selection_losses()))
    chosen = model.frozen_ensemble(selection.index)
    test_rows = len(data.x_test) if settings.eval_steps is None else settings.eval_steps * settings.eval_batch_size
    select_rows = len(data.x_select) if settings.evaluator_steps is None else (
        settings.evaluator_steps * settings.evaluator_batch_size)
    chosen_model = distribution.for_inference(EnsembleModel(
        members=chosen.members, ensembler=chosen.ensembler, member_names=[m.name for m in chosen.record.members],
        preprocessing=model.preprocessing, with_member_logits=True))
    test_outputs: dict = {}  # the pass's outputs, whose member logits the pool keeps
    metrics = evaluate(chosen_model, data.x_test[:test_rows], data.y_test[:test_rows],
                       predict=_keeping(predict, test_outputs))

    new_members = {record.name: member for record, member in zip(chosen.record.members, chosen.members)
                   if record.iteration == iteration}
    member_params = _member_params(run_dir, iteration, new_members)
    summary = {
        "iteration": iteration,
        "members": [m.name for m in chosen.record.members],
        "candidates": [{"name": name, "selection_loss": None if selection.losses is None else selection.losses[i]}
                       for i, name in enumerate(model.selection_names)],
        "chosen": model.selection_names[selection.index],
        "mixture_weights": chosen.record.ensembler["weights"],
        "ensemble": metrics["ensemble"],
        "member_metrics": metrics["members"],
        "member_params": member_params,
        "trainable_params": sum(member_params[m.name] for m in chosen.record.members),
        "train_seconds": round(train_seconds, 3),
        "global_step": (iteration + 1) * settings.iteration_steps,
    }
    if settings.temperature_scaling:  # on the rows selection reads
        summary["temperature_scaling"] = scale_temperature(
            chosen_model, (data.x_select[:select_rows], data.y_select[:select_rows]),
            (data.x_test[:test_rows], data.y_test[:test_rows]), predict=predict)
    summary["subnetworks"] = [record.to_dict() for record in _candidate_records(
        model, selection, evaluated.get("pass"), chosen_names=summary["members"],
        train_seconds=summary["train_seconds"])]
    architecture = {"iteration": iteration, "ensemble": chosen.record.to_dict(), "num_classes": data.num_classes,
                    "member_params": summary["member_params"],
                    "generator_state": generator.state_dict(), "selection_names": model.selection_names,
                    "selection_index": selection.index, "global_step": summary["global_step"]}
    pool = None
    if settings.keep_pool:
        pool = _candidate_pool(model, evaluated.get("pass"), test_outputs["value"]["members"], distribution=distribution,
                               predict=predict, selection=(data.x_select[:select_rows], data.y_select[:select_rows]),
                               test=(data.x_test[:test_rows], data.y_test[:test_rows]))
    run_dir.publish_iteration(iteration, architecture=architecture, summary=summary, new_members=new_members,
                              pool=pool, unchosen={name: subnetwork for name, subnetwork in
                                                   zip(model.member_names, model.subnetworks)
                                                   if name not in new_members} if pool is not None else None)
    on_write()
    return summary


def _keeping(predict: BatchedPredictor, kept: dict) -> Callable:
    """`predict`, keeping its last outputs in `kept["value"]`."""
    def run(model, images, **kwargs):
        kept["value"] = predict(model, images, **kwargs)
        return kept["value"]
    return run


def _candidate_pool(model: IterationModel, evaluated: SelectionPass | None, test_logits: dict[str, np.ndarray], *,
                    distribution: Distribution, predict: BatchedPredictor, selection: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray]) -> candidate_pool.Pool:
    """Every new candidate's own logits on the selection and test rows, from the passes that ran where they hold them:
    the evaluator pass has every candidate's on the selection rows, the test pass the chosen ones'. What is missing
    costs one pass: the selection rows through the iteration model when no evaluator pass ran, and the test rows
    through the unchosen candidates only."""
    names = model.member_names
    on_selection = dict(evaluated.member_logits) if evaluated is not None else {}
    if any(name not in on_selection for name in names):
        on_selection = predict(distribution.for_inference(model), selection[0],
                               pick=lambda out: {name: out["members"][name] for name in names})
    on_test = {name: test_logits[name] for name in names if name in test_logits}
    missing = [(name, subnetwork) for name, subnetwork in zip(names, model.subnetworks) if name not in on_test]
    if missing:
        unchosen = distribution.for_inference(EnsembleModel(
            members=[subnetwork for _, subnetwork in missing], ensembler=MeanEnsembler(num_members=len(missing)),
            member_names=[name for name, _ in missing], preprocessing=model.preprocessing, with_member_logits=True))
        on_test.update(predict(unchosen, test[0], pick=lambda out: out["members"]))
    return candidate_pool.Pool(names=list(names), logits={"selection": on_selection, "test": on_test},
                               labels={"selection": selection[1], "test": test[1]})


def _train(model: IterationModel, iteration: int, *, run_dir: RunDirectory, settings: EngineSettings,
           data: Partitions, seed: int, make_callbacks: CallbackFactory | None,
           on_write: Callable[[], None]) -> float:
    """Trains the remaining steps of the iteration in `fit` chunks, with a checkpoint after each chunk.

    Returns the seconds spent training the iteration, this session's and those of the sessions it resumes.
    """
    checkpoint_dir = run_dir.checkpoint_dir(iteration)
    started = time.monotonic()
    # Built here, not lazily in the first step: a TF train function that creates variables is traced twice.
    model.optimizer.build(model.trainable_variables)
    step = checkpoints.restore_latest(checkpoint_dir, model)
    earlier = checkpoints.train_seconds(checkpoint_dir, step)  # by the sessions that wrote the checkpoints
    total = settings.iteration_steps
    progress = IterationProgress(iteration=iteration, total_steps=total, start_step=step, verbose=settings.verbose)
    callbacks = [progress] + ([StopEvery(settings.checkpoint_secs)] if settings.checkpoint_secs else [])
    callbacks += make_callbacks(model, iteration, step) if make_callbacks else []
    while step < total:
        chunk = total - step if not settings.checkpoint_steps else min(settings.checkpoint_steps, total - step)
        if model.device_data is not None:  # the rows only; the step gathers images and labels on the device
            inputs = dict(x={ROWS: train_rows(len(model.device_data), batch_size=settings.batch_size, seed=seed,
                                              start_step=step, steps=chunk)}, batch_size=settings.batch_size)
        else:
            inputs = dict(x=train_batches(data.x_train, data.y_train, batch_size=settings.batch_size, seed=seed,
                                          start_step=step), steps_per_epoch=chunk)
        model.fit(**inputs, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if done <= step:
            raise RuntimeError(f"iteration {iteration}: training made no progress at step {step}")
        step = done
        checkpoints.save(checkpoint_dir, model, step=step, keep=settings.keep_checkpoint_max,
                         train_seconds=earlier + time.monotonic() - started)
        on_write()
    progress.close()
    return earlier + time.monotonic() - started


def _candidate_records(model: IterationModel, selection: Selection, evaluated: SelectionPass | None, *,
                       chosen_names: list[str], train_seconds: float) -> list[CandidateRecord]:
    """The record of every new subnetwork of the iteration (what `Generator`s with a `history` read next)."""
    lowest: dict[int, float] = {}  # new subnetwork index -> lowest selection loss of the ensembles holding it
    if selection.losses is not None:
        offset = len(model.selection_names) - len(model.candidate_names)  # the previous ensemble comes first
        for candidate, new in enumerate(model.candidate_new_members()):
            loss = selection.losses[offset + candidate]
            for index in new:
                if not math.isnan(loss) and (index not in lowest or loss < lowest[index]):
                    lowest[index] = loss
    records = []
    for index, (name, builder, subnetwork) in enumerate(zip(model.member_names, model.builders, model.subnetworks)):
        own = evaluated.members.get(name, {}) if evaluated is not None else {}
        records.append(CandidateRecord(
            name=name, iteration=model.iteration, builder_name=builder.name, shared=dict(builder.shared()),
            complexity=float(builder.complexity), selection_loss=lowest.get(index),
            **{key: own.get(key) for key in ("loss", "accuracy", "error", "nll", "ece", "brier")},
            params=_trainable_params(subnetwork), train_seconds=train_seconds, chosen=name in chosen_names))
    return records


def _trainable_params(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def derive_seed(seed: int, iteration: int) -> int:
    """A seed for iteration t, independent of the others' (members must not start correlated)."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0] % 2**31)


def _member_params(run_dir: RunDirectory, iteration: int, new_members: dict) -> dict[str, int]:
    """Trainable parameters of every member so far: new ones counted now, frozen ones as recorded when trained."""
    counts = dict(run_dir.architecture(iteration - 1).get("member_params", {})) if iteration else {}
    counts.update({name: _trainable_params(member) for name, member in new_members.items()})
    return counts


def _summary_line(summary: dict, num_iterations: int) -> str:
    best_member = max(m["accuracy"] for m in summary["member_metrics"].values())
    return (f"iteration {summary['iteration'] + 1}/{num_iterations}: chose {summary['chosen']} "
            f"({len(summary['members'])} members); test accuracy {summary['ensemble']['accuracy']:.4f} "
            f"loss {summary['ensemble']['loss']:.4f} (best member {best_member:.4f}); "
            f"trained {summary['train_seconds']:.1f}s")
