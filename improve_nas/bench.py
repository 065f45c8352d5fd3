"""`improve-nas bench`: training throughput of the AdaNet engine against a plain `fit` of one NASNet.

The engine run is the real one: `grow_ensemble` with the settings, partitions, generator and augmentation that
`improve-nas train` derives from the same flags (`improve_nas.experiment`), into a temporary run directory that is deleted afterwards. Only
three things differ from `train`, all outside the training step: no console output, one checkpoint per iteration
(at its end), and evaluation and selection capped at `EVAL_BATCHES` batches (they are not timed).

How time is measured (identically for the engine and the baseline):
  - `StepTimer`, a Keras callback in every `fit`, stamps `time.perf_counter()` at each `on_train_batch_end`. Keras
    converts the step's logs to Python numbers before calling callbacks that override `on_train_batch_end`, so each
    stamp follows the step's completion on the device; everything between two stamps (feeding the next batch,
    the step, the other callbacks) is counted.
  - The first step of each `fit` (trace/compile plus one step) is reported as `compile_seconds`, measured from
    its `on_train_batch_begin`, and excluded from throughput: throughput is `(steps - 1) * batch_size` over the
    time from the first stamp to the last. On JAX, XLA's persistent compilation cache starts empty (a temporary
    directory), so iteration 0 and the baseline compile from scratch and later iterations show what the cache saves.
  - `img_per_s` pools every iteration (total images over total time); `per_iteration_img_per_s` splits it.

The baseline is `fit` on numpy arrays of one NASNet of the same hparams, behind the same augmentation layer, with the
same loss (label-smoothed cross-entropy plus L2), optimizer (type, schedule, global-norm clipping), jit setting and
batch size, fed the batches iteration 0 of the engine trains on. It runs twice in the same process, from scratch
each time, once before the engine and once after, and `baseline_img_per_s` pools both: a shared machine whose speed
drifts during the run (seen: +-10 % within minutes on 2 cloud cores) then slows the engine and the baseline alike,
instead of whichever ran in the slower minutes. Both runs are reported (`baseline_img_per_s_before_after`).

Retracing is counted, not assumed: the augmentation layer counts its `training=True` calls between the start and
the end of each `fit`. The layer runs once per trace of the train step (afterwards the compiled step runs), so the
count is the number of traces of the train function: 1 means no retracing.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
import weakref

import keras
import numpy as np

from improve_nas.config import Config
from improve_nas.data import validate_dataset_spec
from improve_nas.data.augment import ImageAugmentation
from improve_nas.errors import UsageError
from improve_nas.presets import resolve_config

DEFAULT_STEPS = 20
EVAL_BATCHES = 2  # test and selection batches per iteration: untimed, kept short


def bench_config(*, preset: str | None = None, hparams: str = "", data_params: str = "", steps: int = DEFAULT_STEPS,
                 iterations: int | None = None, **flags) -> Config:
    """The `Config` a bench run trains: the train flags, with `steps` per iteration and `iterations` iterations.

    Args:
        preset: A preset name, or None.
        hparams: The `--hparams` string.
        data_params: The `--data_params` string.
        steps: Training steps per iteration, the first of which is not timed (>= 2).
        iterations: AdaNet iterations; None keeps the hparams' `boosting_iterations`.
        **flags: The other train flags bench takes (`improve_nas.settings.bench_flags`), by setting name, e.g.
            `batch_size`, `precision` (engine and baseline alike); a missing or None one keeps the preset's value
            (or the default), except `dataset`, which defaults to `fake` (generated CIFAR-shaped images).

    Raises:
        UsageError: a bad flag, hparam or data_param, `steps` < 2 or `iterations` < 1.
    """
    if steps < 2:
        raise UsageError(f"--steps={steps} is invalid; it must be >= 2 (the first step of each iteration compiles)")
    if iterations is not None and iterations < 1:
        raise UsageError(f"--iterations={iterations} is invalid; it must be >= 1")
    flags = {"dataset": "fake", **{name: value for name, value in flags.items() if value is not None},
             "eval_steps": EVAL_BATCHES}
    validate_dataset_spec(flags["dataset"])
    base = resolve_config(preset=preset, flags=flags, hparams=hparams, data_params=data_params).to_dict()
    base["hparams"]["boosting_iterations"] = iterations or base["hparams"]["boosting_iterations"]
    if base["hparams"]["evaluator_steps"] < 0:
        base["hparams"]["evaluator_steps"] = EVAL_BATCHES
    # One fit chunk and one checkpoint per iteration; no TensorBoard summaries are attached.
    base.update(train_steps=steps * base["hparams"]["boosting_iterations"], save_checkpoints_steps=steps,
                save_checkpoints_secs=0, tf_random_seed=0, model_dir="")
    return Config.from_dict(base)


def run_bench(config: Config) -> dict:
    """Trains the single-NASNet baseline, `config` through the engine, and the baseline again; returns the measurements.

    Returns:
        A JSON-ready dict: `backend`, `device`, `host`, `batch_size`, `steps`, `iterations`, `img_per_s`,
        `baseline_img_per_s` (both baseline runs pooled), `baseline_img_per_s_before_after` (each run),
        `baseline_ratio` (baseline / engine), `per_iteration_img_per_s`,
        `last_over_first` (last iteration's throughput / first's), `compile_seconds` (per iteration),
        `candidates_per_iteration` (each iteration's candidates: their genotype hashes, or builder names without
        one; the compile time is that of their fused step), `baseline_compile_seconds` (the first run's), `compilation_cache` (JAX's persistent cache: "empty at
        start", or "off" on TensorFlow or when turned off), `traces_per_iteration`, `baseline_traces`,
        `step_seconds_median` and `cpu_seconds_per_step` (per iteration; process CPU time), their `baseline_` twins
        (both runs pooled),
        `peak_host_rss_bytes` (at the end of the engine run), `host_rss_bytes_per_iteration` (after each
        iteration), `load_average` (1-minute load before and after: other processes slow every number down),
        `wall_seconds` and `config` (the resolved configuration).
    """
    from improve_nas.compilation_cache import persistent_compilation_cache
    from improve_nas.data import load_dataset
    from improve_nas.experiment import experiment

    dataset = load_dataset(config.dataset, data_dir=config.data_dir, seed=0)
    inputs = experiment(config, dataset, seed=config.tf_random_seed, augmentation_class=TraceCountingAugmentation)
    data = inputs.data
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    # An empty cache, as a new `train` run finds it: iteration 0 compiles, later iterations may load its step (and the
    # second baseline run the first's).
    with tempfile.TemporaryDirectory() as scratch, persistent_compilation_cache(scratch) as cache:
        baseline = [_run_baseline(inputs)]
        engine = _run_engine(inputs)
        peak_rss = peak_host_rss_bytes()
        baseline.append(_run_baseline(inputs))
    img_per_s = _throughput(engine, config.batch_size)
    per_iteration = [_throughput([timer], config.batch_size) for timer in engine]
    baseline_img_per_s = _throughput(baseline, config.batch_size)
    return {
        "backend": keras.backend.backend(),
        "device": str(keras.distribution.list_devices()[0]),
        "host": host_description(),
        "batch_size": config.batch_size,
        "steps": config.iteration_steps,
        "iterations": config.hparams.boosting_iterations,
        "img_per_s": img_per_s,
        "baseline_img_per_s": baseline_img_per_s,
        "baseline_img_per_s_before_after": [_throughput([timer], config.batch_size) for timer in baseline],
        "baseline_ratio": round(baseline_img_per_s / img_per_s, 3),
        "per_iteration_img_per_s": per_iteration,
        "last_over_first": round(per_iteration[-1] / per_iteration[0], 3),
        "compile_seconds": [round(timer.compile_seconds, 3) for timer in engine],
        "candidates_per_iteration": [timer.candidates for timer in engine],
        "baseline_compile_seconds": round(baseline[0].compile_seconds, 3),
        "compilation_cache": "empty at start" if cache else "off",
        "traces_per_iteration": [timer.traces for timer in engine],
        "baseline_traces": baseline[0].traces,
        "step_seconds_median": [_median_step_seconds([timer]) for timer in engine],
        "baseline_step_seconds_median": _median_step_seconds(baseline),
        "cpu_seconds_per_step": [_cpu_seconds_per_step([timer]) for timer in engine],
        "baseline_cpu_seconds_per_step": _cpu_seconds_per_step(baseline),
        "peak_host_rss_bytes": peak_rss,
        "host_rss_bytes_per_iteration": [timer.rss_after for timer in engine],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "config": {**config.to_dict(), "dataset_train_examples": int(len(data.x_train)),
                   "image_shape": list(data.x_train.shape[1:])},
    }


def format_text(result: dict) -> str:
    """A few human-readable lines of a `run_bench` result."""
    mib = 1 << 20
    return "\n".join([
        f"{result['backend']} on {result['device']} ({result['host']['cpu']}, {result['host']['cores']} cores), "
        f"batch {result['batch_size']}, {result['iterations']} iterations x {result['steps']} steps",
        f"engine   {result['img_per_s']:.2f} img/s; per iteration "
        + ", ".join(f"{v:.2f}" for v in result["per_iteration_img_per_s"])
        + f" (last/first {result['last_over_first']:.3f})",
        f"baseline {result['baseline_img_per_s']:.2f} img/s (before the engine "
        + ", after ".join(f"{v:.2f}" for v in result["baseline_img_per_s_before_after"])
        + f"; baseline/engine {result['baseline_ratio']:.3f})",
        "compile  " + ", ".join(f"{s:.1f}s" for s in result["compile_seconds"])
        + f" (baseline {result['baseline_compile_seconds']:.1f}s; XLA cache {result['compilation_cache']}); "
        + "traces per iteration "
        + ", ".join(str(t) for t in result["traces_per_iteration"])
        + "; candidates (distinct genotypes) per iteration "
        + ", ".join(f"{len(c)} ({len(set(c))})" for c in result["candidates_per_iteration"]),
        "host RSS after each iteration " + ", ".join(f"{b / mib:.0f}" for b in result["host_rss_bytes_per_iteration"])
        + f" MiB; peak {result['peak_host_rss_bytes'] / mib:.0f} MiB; load average "
        + " -> ".join(f"{v:.2f}" for v in result["load_average"]),
    ])


class StepTimer(keras.callbacks.Callback):
    """Stamps the end of every training step of one iteration (module docstring: how time is measured).

    Overriding `on_train_batch_end` also keeps Keras from dispatching batch-end callbacks asynchronously, so the
    stamps follow the steps' completion. Process CPU time is stamped too: unlike wall time it barely changes when
    other processes compete for the cores, so it tells a slower step from a busier machine.
    """

    def __init__(self, augmentation: TraceCountingAugmentation | None = None):
        super().__init__()
        # Weak: the layer's call history reaches the whole iteration model, which must stay freeable.
        self._augmentation = weakref.ref(augmentation) if augmentation is not None else lambda: None
        self._first_begin: float | None = None
        self._traces_at_begin = 0
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.traces = 0
        self.rss_after: int | None = None
        self.candidates: list[str] = []

    def set_model(self, model):
        pass  # keeps no reference: a finished iteration's model must be freeable, or memory would creep

    def on_train_begin(self, logs=None):
        augmentation = self._augmentation()
        self._traces_at_begin = augmentation.training_calls if augmentation is not None else 0

    def on_train_end(self, logs=None):
        augmentation = self._augmentation()
        if augmentation is not None:
            self.traces += augmentation.training_calls - self._traces_at_begin

    def on_train_batch_begin(self, batch, logs=None):
        if self._first_begin is None:
            self._first_begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    @property
    def compile_seconds(self) -> float:
        """The first step: trace, compile and run."""
        return self.ends[0] - self._first_begin

    @property
    def timed_seconds(self) -> float:
        return self.ends[-1] - self.ends[0]

    @property
    def timed_steps(self) -> int:
        return len(self.ends) - 1

    @property
    def cpu_seconds(self) -> float:
        """Process CPU time (all threads) from the first stamp to the last."""
        return self.cpu_ends[-1] - self.cpu_ends[0]


class TraceCountingAugmentation(ImageAugmentation):
    """`ImageAugmentation` that counts its training-mode calls: one per trace of a compiled train step."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.training_calls = 0

    def call(self, images, training=False):
        if training:
            self.training_calls += 1
        return super().call(images, training=training)


def _run_engine(inputs) -> list[StepTimer]:
    """Grows the ensemble of `inputs` (an `experiment.Experiment`) in a temporary run directory; one timer per
    iteration."""
    from improve_nas.adanet.runtime.engine import grow_ensemble
    from improve_nas.adanet.runtime.run_directory import RunDirectory

    timers: list[StepTimer] = []

    def make_callbacks(model, iteration, start_step):
        timers.append(StepTimer(model.preprocessing))
        return [timers[-1]]

    def on_iteration_end(summary):
        timers[-1].rss_after = host_rss_bytes()
        timers[-1].candidates = [sub["shared"].get("genotype_hash", sub["builder_name"])
                                 for sub in summary["subnetworks"]]

    settings = dataclasses.replace(inputs.settings, verbose=False)
    with tempfile.TemporaryDirectory(prefix="improve_nas_bench_") as run_path:
        grow_ensemble(run_dir=RunDirectory(run_path), settings=settings, data=inputs.data, generator=inputs.generator,
                      make_preprocessing=inputs.make_preprocessing, make_callbacks=make_callbacks,
                      on_iteration_end=on_iteration_end)
    return timers


class _SingleNASNet(keras.Model):
    """Augmentation, then one NASNet; returns its logits (the baseline's whole model)."""

    def __init__(self, *, augmentation: keras.layers.Layer, network: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.augmentation = augmentation
        self.network = network

    def call(self, images, training=False):
        return self.network(self.augmentation(images, training=training), training=training)["logits"]


def _run_baseline(inputs) -> StepTimer:
    """Plain `fit` of one NASNet on iteration 0's batches, timed like the engine; its memory is released after."""
    from improve_nas.adanet.runtime.memory import released_after

    with released_after():  # as after an engine iteration: the traced step must not outlive the baseline
        return _fit_baseline(inputs)


def _fit_baseline(inputs) -> StepTimer:
    from improve_nas.adanet.losses import softmax_cross_entropy
    from improve_nas.adanet.optimizers import make_optimizer, needs_loss_scaling
    from improve_nas.adanet.runtime.batches import train_batches
    from improve_nas.adanet.runtime.engine import derive_seed

    settings, data = inputs.settings, inputs.data
    seed = derive_seed(settings.seed, 0)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    steps, batch_size = settings.iteration_steps, settings.batch_size
    batches = train_batches(data.x_train, data.y_train, batch_size=batch_size, seed=seed)
    x, y = (np.concatenate(parts) for parts in zip(*(next(batches) for _ in range(steps))))

    augmentation = inputs.make_preprocessing(seed)
    builder = copy.deepcopy(inputs.generator).generate_candidates(None, 0)[0]  # a copy: leaves its state alone
    network = builder.build_subnetwork(num_classes=data.num_classes, input_shape=tuple(x.shape[1:]))
    model = _SingleNASNet(augmentation=augmentation, network=network, name="baseline")
    model.build((None, *x.shape[1:]))
    label_smoothing = settings.loss.label_smoothing
    model.compile(
        loss=lambda labels, logits: softmax_cross_entropy(labels, logits, label_smoothing),
        jit_compile=settings.jit_compile,
        optimizer=make_optimizer(settings.optimizer, learning_rate=settings.learning_rate,
                                 schedule=settings.schedule, decay_steps=steps, clip_norm=settings.clip_norm,
                                 clip_groups=[network.trainable_variables],
                                 loss_scaling=needs_loss_scaling([network])))
    model.optimizer.build(model.trainable_variables)  # as the engine does: no second trace
    timer = StepTimer(augmentation)
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return timer


def _throughput(timers: list[StepTimer], batch_size: int) -> float:
    steps = sum(timer.timed_steps for timer in timers)
    return round(steps * batch_size / sum(timer.timed_seconds for timer in timers), 3)


def _median_step_seconds(timers: list[StepTimer]) -> float:
    return round(float(np.median(np.concatenate([np.diff(timer.ends) for timer in timers]))), 4)


def _cpu_seconds_per_step(timers: list[StepTimer]) -> float:
    return round(sum(timer.cpu_seconds for timer in timers) / sum(timer.timed_steps for timer in timers), 4)


def host_rss_bytes() -> int:
    """Resident set size of this process now (Linux `/proc/self/status` VmRSS; elsewhere the peak)."""
    return _proc_status_bytes("VmRSS") or peak_host_rss_bytes()


def peak_host_rss_bytes() -> int:
    """Peak resident set size of this process so far (VmHWM, else `getrusage`)."""
    peak = _proc_status_bytes("VmHWM")
    if peak:
        return peak
    import resource
    import sys

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS reports bytes, Linux KiB


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # "VmRSS:   123456 kB"
    except OSError:
        pass
    return None


def host_description() -> dict:
    """The CPU model and the cores this process may use (throughput on CPU depends on both)."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores}
