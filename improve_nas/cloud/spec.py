"""Reading and checking a Vertex AI CustomJobSpec file (`config.yaml`, `config_test.yaml`).

The file is a `CustomJobSpec` (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec), the same
YAML `gcloud ai custom-jobs create --config=FILE` reads, restricted to what an improve_nas job uses: one worker pool
of one replica running `improve_nas.trainer.trainer` from a Python package on a prebuilt container, and optionally a
second pool of worker replicas for `--distribution=multi_worker` (Vertex AI's TF_CONFIG makes pool 0 the chief),
running the same image and module (submit gives it pool 0's package and args). Anything else is refused here, with
the field's path, instead of minutes later by Vertex AI (or, worse, accepted and wrong: two replicas of pool 0 would
each train the whole ensemble into the same model_dir).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable

from improve_nas.cloud import machines
from improve_nas.cloud.train_flags import parse_train_flags
from improve_nas.errors import UsageError

TRAINER_MODULE = "improve_nas.trainer.trainer"
DISK_TYPES = ("pd-ssd", "pd-standard", "hyperdisk-balanced")
SCHEDULING_STRATEGIES = ("STANDARD", "SPOT", "FLEX_START")
_DURATION = re.compile(r"\d+(\.\d+)?s")  # protobuf Duration in JSON/YAML form, e.g. "604800s"


def load_job_spec(path: str) -> dict[str, Any]:
    """Reads and checks a job spec file.

    Args:
      path: a YAML file holding a CustomJobSpec (e.g. `config.yaml`).

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
    return validate_job_spec(spec, source=path)


def validate_job_spec(spec: Any, *, source: str = "job spec") -> dict[str, Any]:
    """Checks an already parsed spec; returns a deep copy. See `load_job_spec`."""
    try:
        _job_spec(spec)
    except _SpecError as error:
        raise UsageError(f"{source}: {error}") from None
    return copy.deepcopy(spec)


class _SpecError(Exception):
    """A rule broken at a field path; `validate_job_spec` prefixes the file name."""


def _job_spec(spec: Any) -> None:
    _mapping("", spec, required=("workerPoolSpecs",),
             optional=("baseOutputDirectory", "scheduling", "serviceAccount", "network", "enableWebAccess"))
    pools = _list("workerPoolSpecs", spec["workerPoolSpecs"])
    if len(pools) not in (1, 2):
        raise _SpecError(f"workerPoolSpecs holds {len(pools)} worker pools; it must hold one (the chief), or two "
                         "(the chief and its workers, for --distribution=multi_worker)")
    _worker_pool("workerPoolSpecs[0]", pools[0])
    if len(pools) == 2:
        _worker_pool("workerPoolSpecs[1]", pools[1], workers=True)
        for key in ("executorImageUri", "pythonModule"):
            if pools[1]["pythonPackageSpec"][key] != pools[0]["pythonPackageSpec"][key]:
                raise _SpecError(f"workerPoolSpecs[1].pythonPackageSpec.{key} must equal workerPoolSpecs[0]'s: "
                                 "every replica runs the same trainer")
        if pools[1]["pythonPackageSpec"].get("args"):
            raise _SpecError("workerPoolSpecs[1].pythonPackageSpec.args must be empty: the workers get "
                             "workerPoolSpecs[0]'s args (every replica runs the same command)")
    if "baseOutputDirectory" in spec:
        output = spec["baseOutputDirectory"]
        _mapping("baseOutputDirectory", output, required=("outputUriPrefix",))
        _gs_url("baseOutputDirectory.outputUriPrefix", output["outputUriPrefix"])
    if "scheduling" in spec:
        _scheduling("scheduling", spec["scheduling"])
    for key in ("serviceAccount", "network"):
        if key in spec:
            _string(key, spec[key])
    if "enableWebAccess" in spec:
        _boolean("enableWebAccess", spec["enableWebAccess"])


def _worker_pool(path: str, pool: Any, *, workers: bool = False) -> None:
    _mapping(path, pool, required=("machineSpec", "replicaCount", "pythonPackageSpec"), optional=("diskSpec",))
    _machine_spec(f"{path}.machineSpec", pool["machineSpec"])
    replicas = _integer(f"{path}.replicaCount", pool["replicaCount"])
    if workers and replicas < 1:
        raise _SpecError(f"{path}.replicaCount={replicas} must be at least 1 (or leave out the workers' pool)")
    if not workers and replicas != 1:
        raise _SpecError(f"{path}.replicaCount={replicas} must be 1: improve_nas trains in one process on one "
                         "machine, and more replicas would each train the whole ensemble into the same model_dir")
    if "diskSpec" in pool:
        _disk_spec(f"{path}.diskSpec", pool["diskSpec"])
    _python_package_spec(f"{path}.pythonPackageSpec", pool["pythonPackageSpec"])


def _machine_spec(path: str, spec: Any) -> None:
    _mapping(path, spec, required=("machineType",), optional=("acceleratorType", "acceleratorCount"))
    machine_type = _string(f"{path}.machineType", spec["machineType"])
    rule = machines.accelerator_rule(machine_type)
    if rule is None:
        raise _SpecError(f"{path}.machineType={machine_type!r} is not a known Vertex AI training machine type; "
                         f"known families: {machines.known_families()}")
    accelerator = spec.get("acceleratorType", machines.NO_ACCELERATOR)
    accelerator = _string(f"{path}.acceleratorType", accelerator)
    count = _integer(f"{path}.acceleratorCount", spec.get("acceleratorCount", 0))
    if accelerator == machines.NO_ACCELERATOR:
        if count:
            raise _SpecError(f"{path}.acceleratorCount={count} needs an acceleratorType; {machine_type} takes: "
                             f"{_choices(rule.accelerators)}")
        if not rule.cpu_only_allowed:
            raise _SpecError(f"{path}.acceleratorType is required for {machine_type}: it comes with "
                             f"{_describe(rule.accelerators)}")
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


def _python_package_spec(path: str, spec: Any) -> None:
    _mapping(path, spec, required=("executorImageUri", "pythonModule"), optional=("packageUris", "args", "env"))
    image = _string(f"{path}.executorImageUri", spec["executorImageUri"])
    if "/" not in image or any(character.isspace() for character in image):
        raise _SpecError(f"{path}.executorImageUri={image!r} is not a container image URI, e.g. "
                         "us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest")
    module = _string(f"{path}.pythonModule", spec["pythonModule"])
    if module != TRAINER_MODULE:
        raise _SpecError(f"{path}.pythonModule={module!r} must be {TRAINER_MODULE!r}")
    if _list(f"{path}.packageUris", spec.get("packageUris") or []):
        raise _SpecError(f"{path}.packageUris must be empty: improve-nas submit builds and uploads the package "
                         "and fills it in")
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


def _scheduling(path: str, spec: Any) -> None:
    _mapping(path, spec, optional=("timeout", "restartJobOnWorkerRestart", "strategy", "disableRetries",
                                   "maxWaitDuration"))
    for key in ("timeout", "maxWaitDuration"):
        if key in spec and not _DURATION.fullmatch(_string(f"{path}.{key}", spec[key])):
            raise _SpecError(f"{path}.{key}={spec[key]!r} must be a duration in seconds, e.g. '604800s'")
    for key in ("restartJobOnWorkerRestart", "disableRetries"):
        if key in spec:
            _boolean(f"{path}.{key}", spec[key])
    if "strategy" in spec and _string(f"{path}.strategy", spec["strategy"]) not in SCHEDULING_STRATEGIES:
        raise _SpecError(f"{path}.strategy={spec['strategy']!r} is invalid; choose one of: "
                         f"{', '.join(SCHEDULING_STRATEGIES)}")


def _mapping(path: str, value: Any, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict:
    what = path or "the job spec"
    if not isinstance(value, dict):
        raise _SpecError(f"{what} must be a mapping, got {_shown(value)}")
    known = tuple(required) + tuple(optional)
    for key in value:
        if key not in known:
            raise _SpecError(f"unknown key {_join(path, key)}; valid keys here: {', '.join(sorted(known))}")
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
