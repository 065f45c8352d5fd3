"""Reading and checking a Vertex AI CustomJobSpec file (`config.yaml`, `config_test.yaml`).

The file is a `CustomJobSpec` (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec), the same
YAML `gcloud ai custom-jobs create --config=FILE` reads, plus the CustomJob's `labels`. Every documented field is
accepted; the ones improve_nas relies on are checked, with the field's path, instead of minutes later by Vertex AI
(or, worse, accepted and wrong), the others are passed through with their types checked. A misspelt key is refused
with the nearest valid name; machine and accelerator types this version does not know only get a warning.

The improve_nas rules: one worker pool of one replica running `improve_nas.trainer.trainer`, either as a container
(`containerSpec`: this repository's image, whose entry point is the trainer) or as a Python package on a prebuilt
image (`pythonPackageSpec`), and optionally a second pool of worker replicas for `--distribution=multi_worker`
(Vertex AI's TF_CONFIG makes pool 0 the chief) running the same image and command (submit gives it pool 0's args):
two replicas of pool 0 would each train the whole ensemble into the same model_dir. The args are train flags.
"""

from __future__ import annotations

import copy
import re
import sys
from typing import Any, Callable, Iterable

from improve_nas.cloud import image, machines
from improve_nas.cloud.train_flags import parse_train_flags
from improve_nas.errors import UsageError, nearest

TRAINER_MODULE = "improve_nas.trainer.trainer"
TRAINER_COMMANDS = (["python", "-m", TRAINER_MODULE], ["python3", "-m", TRAINER_MODULE])  # the image's entry point
TASKS = ("containerSpec", "pythonPackageSpec")  # what a worker pool runs: exactly one of them
DISK_TYPES = ("pd-ssd", "pd-standard", "hyperdisk-balanced")
SCHEDULING_STRATEGIES = ("STRATEGY_UNSPECIFIED", "STANDARD", "SPOT", "FLEX_START", "ON_DEMAND", "LOW_COST")
_DURATION = re.compile(r"\d+(\.\d+)?s")  # protobuf Duration in JSON/YAML form, e.g. "604800s"
_TENSORBOARD = re.compile(r"projects/[^/]+/locations/[^/]+/tensorboards/[^/]+")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")

# Fields passed through with a type check only (CustomJobSpec, then the nested messages).
_JOB_STRINGS = ("persistentResourceId", "serviceAccount", "network", "protectedArtifactLocationId", "experiment",
                "experimentRun")
_JOB_BOOLEANS = ("enableWebAccess", "enableDashboardAccess")
_JOB_STRING_LISTS = ("reservedIpRanges", "models")
_JOB_FIELDS = ("workerPoolSpecs", "scheduling", "baseOutputDirectory", "tensorboard", "pscInterfaceConfig", "labels",
               *_JOB_STRINGS, *_JOB_BOOLEANS, *_JOB_STRING_LISTS)
_POOL_FIELDS = ("machineSpec", "replicaCount", *TASKS, "diskSpec", "nfsMounts", "lustreMounts")
_MACHINE_STRINGS = ("gpuPartitionSize", "tpuTopology", "minGpuDriverVersion")
_MACHINE_FIELDS = ("machineType", "acceleratorType", "acceleratorCount", "multihostGpuNodeCount",
                   "reservationAffinity", *_MACHINE_STRINGS)

Warn = Callable[[str], None]


def print_warning(message: str) -> None:
    """Warnings go to stderr as one line each; they never stop a submit."""
    print(f"warning: {message}", file=sys.stderr)


def load_job_spec(path: str, *, warn: Warn = print_warning) -> dict[str, Any]:
    """Reads and checks a job spec file.

    Args:
      path: a YAML file holding a CustomJobSpec (e.g. `config.yaml`), optionally with `labels`.
      warn: receives one line per warning (machine or accelerator type not in the table, a retired prebuilt image).

    Returns:
      The spec as plain dicts and lists, exactly as written (`packageUris` still empty).

    Raises:
      UsageError: unreadable file, invalid YAML, or a spec that breaks a rule; the message names the file and the
        field path, e.g. `workerPoolSpecs[0].machineSpec.acceleratorType`.
    """
    import yaml  # deferred: only submit needs PyYAML

    try:
        with open(path, encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    except OSError as error:
        raise UsageError(f"--config={path}: cannot read the job spec ({error.strerror})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"{path}: not valid YAML{line}: {getattr(error, 'problem', None) or error}") from None
    return validate_job_spec(spec, source=path, warn=warn)


def validate_job_spec(spec: Any, *, source: str = "job spec", warn: Warn = print_warning) -> dict[str, Any]:
    """Checks an already parsed spec; returns a deep copy. See `load_job_spec`."""
    warnings: list[str] = []  # given out only for a valid spec: an error stays the one line printed
    try:
        _job_spec(spec, warnings.append)
    except _SpecError as error:
        raise UsageError(f"{source}: {error}") from None
    for message in warnings:
        warn(f"{source}: {message}")
    return copy.deepcopy(spec)


def task_of(pool: dict[str, Any]) -> str:
    """`containerSpec` or `pythonPackageSpec`: what a checked worker pool runs."""
    return next(task for task in TASKS if task in pool)


class _SpecError(Exception):
    """A rule broken at a field path; `validate_job_spec` prefixes the file name."""


def _job_spec(spec: Any, warn: Warn) -> None:
    _mapping("", spec, required=("workerPoolSpecs",), optional=_JOB_FIELDS)
    pools = _list("workerPoolSpecs", spec["workerPoolSpecs"])
    if len(pools) not in (1, 2):
        raise _SpecError(f"workerPoolSpecs holds {len(pools)} worker pools; it must hold one (the chief), or two "
                         "(the chief and its workers, for --distribution=multi_worker)")
    _worker_pool("workerPoolSpecs[0]", pools[0], warn)
    if len(pools) == 2:
        _worker_pool("workerPoolSpecs[1]", pools[1], warn, workers=True)
        _same_trainer(pools[0], pools[1])
    if "baseOutputDirectory" in spec:
        output = spec["baseOutputDirectory"]
        _mapping("baseOutputDirectory", output, required=("outputUriPrefix",))
        _gs_url("baseOutputDirectory.outputUriPrefix", output["outputUriPrefix"])
    if "scheduling" in spec:
        _scheduling("scheduling", spec["scheduling"])
    if "tensorboard" in spec and not _TENSORBOARD.fullmatch(_string("tensorboard", spec["tensorboard"])):
        raise _SpecError(f"tensorboard={spec['tensorboard']!r} must name a Vertex AI TensorBoard: "
                         "projects/PROJECT/locations/REGION/tensorboards/ID")
    if "labels" in spec:
        _labels("labels", spec["labels"])
    if "pscInterfaceConfig" in spec:
        _mapping("pscInterfaceConfig", spec["pscInterfaceConfig"], optional=("networkAttachment", "dnsPeeringConfigs"))
    for key in _JOB_STRINGS:
        if key in spec:
            _string(key, spec[key])
    for key in _JOB_BOOLEANS:
        if key in spec:
            _boolean(key, spec[key])
    for key in _JOB_STRING_LISTS:
        for index, item in enumerate(_list(key, spec.get(key, []))):
            _string(f"{key}[{index}]", item)


def _same_trainer(chief: dict[str, Any], workers: dict[str, Any]) -> None:
    """The workers' pool runs what the chief runs: same kind of task, image and command; the chief's args."""
    task = task_of(chief)
    if task_of(workers) != task:
        raise _SpecError(f"workerPoolSpecs[1] must run a {task} like workerPoolSpecs[0]: every replica runs the same "
                         "trainer")
    keys = ("imageUri", "command") if task == "containerSpec" else ("executorImageUri", "pythonModule")
    for key in keys:
        if workers[task].get(key) != chief[task].get(key):
            raise _SpecError(f"workerPoolSpecs[1].{task}.{key} must equal workerPoolSpecs[0]'s: every replica runs "
                             "the same trainer")
    if workers[task].get("args"):
        raise _SpecError(f"workerPoolSpecs[1].{task}.args must be empty: the workers get workerPoolSpecs[0]'s args "
                         "(every replica runs the same command)")


def _worker_pool(path: str, pool: Any, warn: Warn, *, workers: bool = False) -> None:
    _mapping(path, pool, required=("machineSpec", "replicaCount"), optional=_POOL_FIELDS)
    tasks = [task for task in TASKS if task in pool]
    if len(tasks) != 1:
        raise _SpecError(f"{path} must have exactly one of containerSpec (this repository's image) or "
                         f"pythonPackageSpec (a prebuilt image); it has {' and '.join(tasks) or 'neither'}")
    _machine_spec(f"{path}.machineSpec", pool["machineSpec"], warn)
    replicas = _integer(f"{path}.replicaCount", pool["replicaCount"])
    if workers and replicas < 1:
        raise _SpecError(f"{path}.replicaCount={replicas} must be at least 1 (or leave out the workers' pool)")
    if not workers and replicas != 1:
        raise _SpecError(f"{path}.replicaCount={replicas} must be 1: improve_nas trains in one process on one "
                         "machine, and more replicas would each train the whole ensemble into the same model_dir")
    if "diskSpec" in pool:
        _disk_spec(f"{path}.diskSpec", pool["diskSpec"])
    for index, mount in enumerate(_list(f"{path}.nfsMounts", pool.get("nfsMounts", []))):
        _mapping(f"{path}.nfsMounts[{index}]", mount, required=("server", "path", "mountPoint"))
    for index, mount in enumerate(_list(f"{path}.lustreMounts", pool.get("lustreMounts", []))):
        _mapping(f"{path}.lustreMounts[{index}]", mount,
                 optional=("instanceIp", "volumeHandle", "filesystem", "mountPoint"))
    if tasks[0] == "containerSpec":
        _container_spec(f"{path}.containerSpec", pool["containerSpec"])
    else:
        _python_package_spec(f"{path}.pythonPackageSpec", pool["pythonPackageSpec"], warn)


def _machine_spec(path: str, spec: Any, warn: Warn) -> None:
    _mapping(path, spec, required=("machineType",), optional=_MACHINE_FIELDS)
    for key in _MACHINE_STRINGS:
        if key in spec:
            _string(f"{path}.{key}", spec[key])
    if "multihostGpuNodeCount" in spec:
        _integer(f"{path}.multihostGpuNodeCount", spec["multihostGpuNodeCount"])
    if "reservationAffinity" in spec:
        _mapping(f"{path}.reservationAffinity", spec["reservationAffinity"], required=("reservationAffinityType",),
                 optional=("key", "values"))
    machine_type = _string(f"{path}.machineType", spec["machineType"])
    accelerator = _string(f"{path}.acceleratorType", spec.get("acceleratorType", machines.NO_ACCELERATOR))
    count = _integer(f"{path}.acceleratorCount", spec.get("acceleratorCount", 0))
    known_accelerator = accelerator in machines.ACCELERATOR_TYPES or accelerator == machines.NO_ACCELERATOR
    if not known_accelerator:
        warn(f"{path}.acceleratorType={accelerator!r} is not an accelerator type this version knows; "
             f"{nearest(accelerator, machines.ACCELERATOR_TYPES)}not checked (Vertex AI will judge it)")
    rule = machines.accelerator_rule(machine_type)
    if rule is None:
        warn(f"{path}.machineType={machine_type!r} is not in improve_nas's table of Vertex AI training machine "
             f"types (known families: {machines.known_families()}); its accelerators are not checked")
        return
    if accelerator == machines.NO_ACCELERATOR:
        if count:
            raise _SpecError(f"{path}.acceleratorCount={count} needs an acceleratorType; {machine_type} takes: "
                             f"{_choices(rule.accelerators)}")
        if not rule.cpu_only_allowed:
            raise _SpecError(f"{path}.acceleratorType is required for {machine_type}: it comes with "
                             f"{_describe(rule.accelerators)}")
        return
    if not known_accelerator:
        return
    if accelerator not in rule.accelerators:
        offered = _choices(rule.accelerators) if rule.accelerators else "none (a CPU-only machine type)"
        raise _SpecError(f"{path}.acceleratorType={accelerator!r} does not fit machineType {machine_type}; "
                         f"choose one of: {offered}")
    if "acceleratorCount" not in spec:
        raise _SpecError(f"missing required field {path}.acceleratorCount (with acceleratorType {accelerator})")
    allowed = rule.accelerators[accelerator]
    if count not in allowed:
        raise _SpecError(f"{path}.acceleratorCount={count} does not fit {machine_type} with {accelerator}; "
                         f"choose one of: {', '.join(map(str, allowed))}")


def _disk_spec(path: str, spec: Any) -> None:
    _mapping(path, spec, optional=("bootDiskType", "bootDiskSizeGb"))
    if "bootDiskType" in spec:
        disk_type = _string(f"{path}.bootDiskType", spec["bootDiskType"])
        if disk_type not in DISK_TYPES:
            raise _SpecError(f"{path}.bootDiskType={disk_type!r} is invalid; choose one of: {', '.join(DISK_TYPES)}")
    if "bootDiskSizeGb" in spec:
        size = _integer(f"{path}.bootDiskSizeGb", spec["bootDiskSizeGb"])
        if not 100 <= size <= 64000:
            raise _SpecError(f"{path}.bootDiskSizeGb={size} must be between 100 and 64000")


def _container_spec(path: str, spec: Any) -> None:
    _mapping(path, spec, optional=("imageUri", "command", "args", "env"))
    if spec.get("imageUri"):  # empty or left out: submit fills in the image of this repository's Dockerfile
        _image_uri(f"{path}.imageUri", spec["imageUri"])
    if "command" in spec:
        command = [_string(f"{path}.command[{index}]", part)
                   for index, part in enumerate(_list(f"{path}.command", spec["command"]))]
        if command and command not in TRAINER_COMMANDS:
            raise _SpecError(f"{path}.command={command!r} must run the trainer ({' '.join(TRAINER_COMMANDS[0])}, "
                             "the image's entry point) or be left out")
    _task_args_and_env(path, spec)


def _python_package_spec(path: str, spec: Any, warn: Warn) -> None:
    _mapping(path, spec, required=("executorImageUri", "pythonModule"), optional=("packageUris", "args", "env"))
    for message in image.prebuilt_image_warnings(_image_uri(f"{path}.executorImageUri", spec["executorImageUri"])):
        warn(f"{path}.executorImageUri: {message}")
    module = _string(f"{path}.pythonModule", spec["pythonModule"])
    if module != TRAINER_MODULE:
        raise _SpecError(f"{path}.pythonModule={module!r} must be {TRAINER_MODULE!r}")
    if _list(f"{path}.packageUris", spec.get("packageUris") or []):
        raise _SpecError(f"{path}.packageUris must be empty: improve-nas submit builds and uploads the package "
                         "and fills it in")
    _task_args_and_env(path, spec)


def _task_args_and_env(path: str, spec: dict[str, Any]) -> None:
    """`args` are train flags; `env` is a list of name/value pairs (containerSpec and pythonPackageSpec alike)."""
    args = [_string(f"{path}.args[{index}]", arg) for index, arg in enumerate(_list(f"{path}.args",
                                                                                     spec.get("args") or []))]
    try:
        parse_train_flags(args, origin=f"{path}.args")
    except UsageError as error:
        raise _SpecError(str(error)) from None
    for index, variable in enumerate(_list(f"{path}.env", spec.get("env") or [])):
        _mapping(f"{path}.env[{index}]", variable, required=("name", "value"))
        _string(f"{path}.env[{index}].name", variable["name"])
        _string(f"{path}.env[{index}].value", variable["value"])


def _image_uri(path: str, uri: Any) -> str:
    if "/" not in _string(path, uri) or any(character.isspace() for character in uri):
        raise _SpecError(f"{path}={uri!r} is not a container image URI, e.g. "
                         "us-central1-docker.pkg.dev/PROJECT/improve-nas/trainer:TAG")
    return uri


def _scheduling(path: str, spec: Any) -> None:
    _mapping(path, spec, optional=("timeout", "restartJobOnWorkerRestart", "strategy", "disableRetries",
                                   "maxWaitDuration"))
    for key in ("timeout", "maxWaitDuration"):
        if key in spec and not _DURATION.fullmatch(_string(f"{path}.{key}", spec[key])):
            raise _SpecError(f"{path}.{key}={spec[key]!r} must be a duration in seconds, e.g. '604800s'")
    for key in ("restartJobOnWorkerRestart", "disableRetries"):
        if key in spec:
            _boolean(f"{path}.{key}", spec[key])
    if "strategy" in spec:
        strategy = _string(f"{path}.strategy", spec["strategy"])
        if strategy not in SCHEDULING_STRATEGIES:
            raise _SpecError(f"{path}.strategy={strategy!r} is invalid; {nearest(strategy, SCHEDULING_STRATEGIES)}"
                             f"choose one of: {', '.join(SCHEDULING_STRATEGIES)}")


def _labels(path: str, labels: Any) -> None:
    """The CustomJob's labels (Google Cloud label rules: lowercase keys and values, at most 64 labels)."""
    if not isinstance(labels, dict) or len(labels) > 64:
        raise _SpecError(f"{path} must be a mapping of at most 64 key: value labels, got {_shown(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise _SpecError(f"{path} key {key!r} must be 1-63 lowercase letters, digits, '_' or '-', starting "
                             "with a letter")
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise _SpecError(f"{path}.{key}={value!r} must be a string of at most 63 lowercase letters, digits, "
                             "'_' or '-'")


def _mapping(path: str, value: Any, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict:
    what = path or "the job spec"
    if not isinstance(value, dict):
        raise _SpecError(f"{what} must be a mapping, got {_shown(value)}")
    known = tuple(required) + tuple(optional)
    for key in value:
        if key not in known:
            hint = nearest(str(key), known).strip() or f"valid keys here: {', '.join(sorted(known))}"
            raise _SpecError(f"unknown key {_join(path, key)}; {hint}")
    for key in required:
        if key not in value:
            raise _SpecError(f"missing required field {_join(path, key)}")
    return value


def _list(path: str, value: Any) -> list:
    if not isinstance(value, list):
        raise _SpecError(f"{path} must be a list, got {_shown(value)}")
    return value


def _string(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _SpecError(f"{path} must be a non-empty string, got {_shown(value)}")
    return value


def _integer(path: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _SpecError(f"{path} must be an integer, got {_shown(value)}")
    return value


def _boolean(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _SpecError(f"{path} must be true or false, got {_shown(value)}")
    return value


def _gs_url(path: str, value: Any) -> str:
    if not _string(path, value).startswith("gs://") or len(value) <= len("gs://"):
        raise _SpecError(f"{path}={value!r} must be a gs:// URL")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing"


def _choices(accelerators: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(sorted(accelerators))


def _describe(accelerators: dict[str, tuple[int, ...]]) -> str:
    return " or ".join(f"{'/'.join(map(str, counts))} × {name}" for name, counts in sorted(accelerators.items()))
