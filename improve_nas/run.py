"""One training run: Config -> data -> AdaNet iterations -> report and export.

The engine's inputs come from `improve_nas.experiment` (the configuration becomes `EngineSettings`, the dataset numpy
partitions, the hparams a NASNet generator and the data params an augmentation layer); this module adds the run
directory around them: resume checks, the lock, the working copy, preemption, the report and the export.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from typing import TYPE_CHECKING

from improve_nas import run_checks, settings
from improve_nas.adanet.stopping import EARLY_STOPPING
from improve_nas.config import Config
from improve_nas.data import ImageDataset, load_dataset, validate_dataset_spec
from improve_nas.errors import UsageError, io_error_line
from improve_nas.experiment import experiment, partition_arrays
from improve_nas.report import build_report, stopped_outcome, write_report
from improve_nas.storage import fileio, gcs, run_location, run_lock

if TYPE_CHECKING:
    from improve_nas import preemption

CONFIG_JSON = "config.json"
ENV_JSON = "env.json"
# Vertex AI sets it (to gs://...) when a job uses a Vertex TensorBoard; the event files are copied there as well.
TENSORBOARD_ENV = "AIP_TENSORBOARD_LOG_DIR"


def train(config: Config, *, force_unlock: bool = False) -> dict:
    """Grows the ensemble described by `config` in `config.model_dir` (local or gs://), resuming what is there.

    Everything that can be wrong with the input is checked before the run directory (or the bucket) is touched. A
    gs:// run trains in a local working copy (`run_location`), pulled first and pushed after every checkpoint, every
    finished iteration and at the end. SIGTERM stops the run cleanly at the next batch, after a checkpoint
    (`preemption`). In a multi-worker run every process trains, and only the chief writes `model_dir` (the others
    work in a scratch copy, `run_location.WorkerCopy`) and exports; the others wait for it before returning. The
    writer holds `model_dir`'s lock (`run_lock`) for the whole run; `force_unlock` takes it from whoever holds it.

    Returns:
      The run's report (docs/design.md §4).

    Raises:
      UsageError: bad input, or another process holds the lock of `model_dir`; nothing was written.
      integrity.DamagedRunError: (a UsageError) a damaged file of the run directory, named with the way out.
      preemption.Preempted: SIGTERM; the state is saved and the same command resumes (exit code 143).
    """
    if not config.dataset:
        raise UsageError("flag --dataset is required (or a --preset that sets it)")
    # Before multi_worker starts TensorFlow (`_process_distribution`) and before gs:// is reached: a typo fails fast.
    validate_dataset_spec(config.dataset)
    if gcs.is_gs_url(config.model_dir):
        gcs.parse_gs_url(config.model_dir)
    distribution = _process_distribution(config)
    location = run_location.open_location(config.model_dir)
    if not distribution.is_chief:
        location = run_location.WorkerCopy(location)
    stored = _read_stored(location, CONFIG_JSON, Config.from_json, way_out=(
        "delete it and rerun with the run's original flags (they are written into it again)"))
    if stored is not None:
        _check_same_run(stored, config)
    # Taken before the slow data loading, so a second process on the same model_dir fails within seconds.
    with run_lock.hold(location.url, force=force_unlock) if distribution.is_chief else contextlib.nullcontext():
        return _train(config, distribution, location)


def _train(config: Config, distribution, location) -> dict:
    """`train`, once the input is checked and the run directory locked."""
    tensorboard_target = os.environ.get(TENSORBOARD_ENV) or None
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, seed=0)
    seed = distribution.chief_value(_resolve_seed(config, location))
    # The flag-dependent data checks run before Keras is imported, so bad input is refused in a second or two.
    arrays = partition_arrays(dataset, config, seed=seed)
    run_checks.check_run(config, image_shape=dataset.image_shape, x_train=arrays["x_train"],
                         y_train=arrays["y_train"], num_candidates=config.hparams.candidates_trained_together)
    inputs = experiment(config, dataset, seed=seed)

    from improve_nas.adanet.runtime.run_directory import RunDirectory
    from improve_nas.environment import describe_environment

    run_dir = RunDirectory(location.local_dir)
    copies = [run_location.TensorBoardCopy(tensorboard_target, run_dir.tensorboard_dir)] \
        if tensorboard_target and distribution.is_chief else []

    # Input checked; from here on the run directory changes.
    from improve_nas import preemption  # imports Keras: only once the input is known to be good

    with preemption.PreemptionGuard() as guard, _closed_at_exit(location), _tidy_after_io_error(run_dir.path):
        def sync() -> None:
            location.push()
            for copy in copies:
                copy.push()

        def stop_if_preempted() -> None:
            if guard.requested and distribution.is_chief:  # the report covers every iteration published so far
                _write_report(run_dir.path, dataset, run_dir.summaries(), config.hparams)
                sync()
            guard.raise_if_requested(lambda: _resume_point(location, run_dir))

        def on_write() -> None:  # after every checkpoint and every published iteration
            sync()
            stop_if_preempted()

        location.pull()
        if location.local_dir != location.url:
            print(f"model_dir {location.url}: working copy {location.local_dir}", flush=True)
        model_dir = run_dir.path
        os.makedirs(model_dir, exist_ok=True)
        fileio.remove_leftovers(model_dir)  # of an earlier attempt that died writing (e.g. on a full disk)
        fileio.write_json(os.path.join(model_dir, CONFIG_JSON), config.to_dict())
        fileio.write_json(os.path.join(model_dir, ENV_JSON), describe_environment(seed=seed))
        sync()

        finished = run_dir.verify()  # a damaged iteration is one line naming it; also in a finished run
        stopped = stopped_outcome(run_dir.summaries(), config.hparams)
        if stopped["reason"] == EARLY_STOPPING:  # decided by an earlier session, from the same summaries
            print(f"run in {location.url} already stopped early ({stopped['detail']}); nothing to do", flush=True)
        elif len(finished) >= config.hparams.boosting_iterations:
            print(f"run in {location.url} already finished ({len(finished)} iterations); nothing to do", flush=True)
        else:
            stop_if_preempted()
            _grow(config, run_dir, dataset, inputs, guard, on_write)
        from improve_nas.export import EXPORT_DIR, check_export, export_final_ensemble

        # Missing also in a finished run that was preempted between its last iteration and the export; damaged when
        # a file of it no longer matches its manifest.
        redo = check_export(run_dir) if distribution.is_chief else None
        if redo:
            if os.path.isdir(run_dir.file(EXPORT_DIR)):
                print(redo, flush=True)
            export_final_ensemble(run_dir, preprocessing=inputs.make_preprocessing(seed),
                                  image_shape=dataset.image_shape)
        report = _write_report(model_dir, dataset, run_dir.summaries(), config.hparams)
        sync()
        distribution.wait_for_chief()
    return report


def _process_distribution(config: Config):
    """The hooks of `config.distribution` that concern the whole process (`is_chief`, `chief_value`, ...).

    `multi_worker` is made now, before any data is loaded, because TensorFlow must not have started its runtime yet
    (the engine later gets the same one); the other distributions are made by the engine, and only their one-process
    hooks are needed here. TF_CONFIG is checked against the flag without importing Keras, so a mismatch fails fast.
    """
    from improve_nas.adanet.runtime.distribution import Distribution, check_cluster, make_distribution

    cluster = check_cluster(config.distribution)
    if config.distribution != "multi_worker":
        return Distribution()
    distribution = make_distribution(config.distribution, batch_size=config.batch_size)
    print(f"multi_worker: this process is {cluster.task} of {cluster.num_workers} workers, "
          f"{distribution.num_replicas} replicas in all; "
          f"{'it writes model_dir' if distribution.is_chief else 'the chief writes model_dir'}", flush=True)
    return distribution


@contextlib.contextmanager
def _tidy_after_io_error(model_dir: str):
    """On a full disk or a permission error, removes the half-written staging files so the rerun starts clean."""
    try:
        yield
    except Exception as error:
        if io_error_line(error) is not None and os.path.isdir(model_dir):
            with contextlib.suppress(OSError):
                fileio.remove_leftovers(model_dir)
        raise


def _closed_at_exit(location):
    """Deletes a worker's scratch copy when the run ends."""
    return contextlib.closing(location) if isinstance(location, run_location.WorkerCopy) else contextlib.nullcontext()


def _grow(config: Config, run_dir, dataset: ImageDataset, inputs, guard: preemption.PreemptionGuard,
          on_write) -> None:
    """Runs the engine: `on_write` after every checkpoint and finished iteration; `guard` stops `fit` early."""
    from improve_nas.adanet.runtime.engine import grow_ensemble
    from improve_nas.compilation_cache import persistent_compilation_cache

    def on_iteration_end(summary: dict) -> None:
        _on_iteration_end(run_dir, dataset, summary, config.hparams)
        on_write()

    with persistent_compilation_cache() as cache_dir:
        if cache_dir:
            print(f"XLA compilation cache: {cache_dir}", flush=True)
        grow_ensemble(run_dir=run_dir, settings=inputs.settings, data=inputs.data, generator=inputs.generator,
                      make_preprocessing=inputs.make_preprocessing,
                      make_callbacks=_training_callbacks(config, run_dir, guard, inputs.data,
                                                         seed=inputs.settings.seed),
                      on_iteration_end=on_iteration_end,
                      on_write=on_write)


def _training_callbacks(config: Config, run_dir, guard: preemption.PreemptionGuard, data, *, seed: int):
    """Callbacks for each iteration's training: the preemption stop, and TensorBoard summaries where TF exists."""
    from improve_nas import summaries as tensorboard_summaries
    from improve_nas.adanet.runtime.batches import EpochPermutations
    from improve_nas.adanet.runtime.engine import derive_seed

    summaries = tensorboard_summaries.available()
    if not summaries:
        print("TensorFlow or TensorBoard is not installed: no TensorBoard summaries will be written", flush=True)

    def make(model, iteration, start_step):
        callbacks = [guard.stop_callback()]
        if summaries:
            # The batch of step k of iteration t, as the engine draws it (batches.py: a function of the seed and k)
            permutations = EpochPermutations(len(data.x_train), derive_seed(seed, iteration))

            def ensemble_terms_at(step):
                rows = permutations.indices(step, config.batch_size)
                return model.ensemble_loss_terms(data.x_train[rows], data.y_train[rows])

            callbacks.append(tensorboard_summaries.TrainingSummaries(
                root=run_dir.tensorboard_dir, every_steps=config.save_summary_steps,
                base_step=iteration * config.iteration_steps, start_step=start_step,
                subnetwork_log_keys=model.subnetwork_log_keys, ensemble_log_keys=model.ensemble_log_keys,
                ensemble_terms_at=ensemble_terms_at))
        return callbacks
    return make


def _on_iteration_end(run_dir, dataset: ImageDataset, summary: dict, hparams) -> None:
    from improve_nas import summaries

    if summaries.available():
        summaries.write_iteration_summary(run_dir.tensorboard_dir, summary)
    _write_report(run_dir.path, dataset, run_dir.summaries(), hparams)


def _resume_point(location, run_dir) -> str:
    """Where the same command will continue: the first unfinished iteration, at its newest checkpoint."""
    from improve_nas.adanet.runtime import checkpoints

    iteration = len(run_dir.finished_iterations())
    saved = checkpoints.steps(run_dir.checkpoint_dir(iteration))
    return (f"re-run the same command to resume {location.url} at iteration {iteration}, "
            f"step {saved[-1] if saved else 0}")


def _write_report(model_dir: str, dataset: ImageDataset, entries: list[dict], hparams) -> dict:
    report = build_report(dataset=dataset.name, num_classes=dataset.num_classes, iterations=entries, hparams=hparams)
    write_report(model_dir, report)
    return report


def _check_same_run(stored: Config, config: Config) -> None:
    """Refuses to continue a run directory written with a different configuration."""
    differing = settings.resume_conflicts(stored.to_dict(), config.to_dict())
    if config.tf_random_seed is not None and stored.tf_random_seed not in (None, config.tf_random_seed):
        differing.append("tf_random_seed")
    if differing:
        raise UsageError(f"model_dir {config.model_dir!r} holds a run with a different configuration (differing: "
                         f"{', '.join(differing)}); use a new --model_dir or the original flags")


def _resolve_seed(config: Config, location) -> int:
    """The run's root seed: the flag, else the one a previous attempt recorded, else a fresh one."""
    if config.tf_random_seed is not None:
        return config.tf_random_seed
    seed = _read_stored(location, ENV_JSON, lambda text: int(json.loads(text)["seed"]), way_out=(
        "rerun with --tf_random_seed=<the seed the run started with>, or, if no iteration has finished, delete it"))
    return random.SystemRandom().randrange(2**31) if seed is None else seed


def _read_stored(location, name: str, parse, *, way_out: str):
    """`parse` of file `name` of the run directory, None when there is none; a damaged one is one line."""
    from improve_nas.storage.integrity import DamagedRunError

    path = f"{location.url.rstrip('/')}/{name}"
    try:
        text = location.read_text(name)
        return None if text is None else parse(text)
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # UnicodeDecodeError, JSONDecodeError too
        reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise DamagedRunError(f"{path} is damaged ({type(error).__name__}: {reason}): {way_out}") from None
