"""`improve-nas submit` and the Vertex AI job specs: checks before anything happens, the container image (its
Dockerfile, build and push), packaging, upload, job creation.

Uploads go to a local GCS emulator; gcloud and docker are fake scripts on PATH, REST calls a recorder. Nothing is sent
beyond 127.0.0.1, and nothing is built: the Dockerfile is parsed (no container runtime here).
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from improve_nas import cli
from improve_nas.cloud import (
    SubmitRequest,
    image,
    load_job_spec,
    machines,
    package,
    plan_job,
    submit,
    train_flags,
    validate_job_spec,
    vertex,
)
from improve_nas.errors import UsageError
from improve_nas.storage import gcs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config.yaml")
CONFIG_TEST = os.path.join(ROOT, "config_test.yaml")
CLI = [sys.executable, "-m", "improve_nas.cli"]
DOCKERFILE = os.path.join(ROOT, "improve_nas", "cloud", "Dockerfile")
IMAGE_URI = re.compile(r"us-central1-docker\.pkg\.dev/(?P<project>[^/]+)/improve-nas/(?P<name>trainer(-jax)?):"
                       r"(?P<version>[^-]+)-(?P<digest>[0-9a-f]{12})")

GOOD_SPEC = """
workerPoolSpecs:
  - machineSpec: {machineType: n1-standard-8, acceleratorType: NVIDIA_TESLA_T4, acceleratorCount: 1}
    replicaCount: 1
    pythonPackageSpec:
      executorImageUri: us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest
      pythonModule: improve_nas.trainer.trainer
      args: [--preset=smoke]
"""

WORKER_POOL = """
  - machineSpec: {machineType: n1-standard-8, acceleratorType: NVIDIA_TESLA_T4, acceleratorCount: 1}
    replicaCount: 1
    pythonPackageSpec:
      executorImageUri: us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest
      pythonModule: improve_nas.trainer.trainer
""".lstrip("\n")


CONTAINER_SPEC = """
workerPoolSpecs:
  - machineSpec: {machineType: n1-standard-8, acceleratorType: NVIDIA_TESLA_T4, acceleratorCount: 1}
    replicaCount: 1
    containerSpec:
      args: [--preset=smoke]
"""


def spec_with(**replacements):
    """GOOD_SPEC with textual replacements (old=new pairs given as tuples)."""
    text = GOOD_SPEC
    for old, new in replacements.values():
        assert old in text, old
        text = text.replace(old, new)
    return text


def machine(text):
    return ("{machineType: n1-standard-8, acceleratorType: NVIDIA_TESLA_T4, acceleratorCount: 1}", text)


# case -> (spec text, fragment the error must contain)
BROKEN_SPECS = {
    "old ML Engine key": (GOOD_SPEC + "scaleTier: CUSTOM\n", "unknown key scaleTier"),
    "unknown nested key": (spec_with(m=machine("{machineType: n1-standard-8, gpuType: T4}")),
                           "unknown key workerPoolSpecs[0].machineSpec.gpuType"),
    "missing machine type": (spec_with(m=machine("{acceleratorType: NVIDIA_TESLA_T4, acceleratorCount: 1}")),
                             "missing required field workerPoolSpecs[0].machineSpec.machineType"),
    "missing module": (spec_with(m=("      pythonModule: improve_nas.trainer.trainer\n", "")),
                       "missing required field workerPoolSpecs[0].pythonPackageSpec.pythonModule"),
    "missing replica count": (spec_with(m=("    replicaCount: 1\n", "")),
                              "missing required field workerPoolSpecs[0].replicaCount"),
    "replica count as text": (spec_with(m=("replicaCount: 1", "replicaCount: one")),
                              "workerPoolSpecs[0].replicaCount must be an integer"),
    "accelerator count as bool": (spec_with(m=("acceleratorCount: 1", "acceleratorCount: true")),
                                  "workerPoolSpecs[0].machineSpec.acceleratorCount must be an integer"),
    "no replicas": (spec_with(m=("replicaCount: 1", "replicaCount: 0")), "workerPoolSpecs[0].replicaCount=0"),
    "two replicas": (spec_with(m=("replicaCount: 1", "replicaCount: 2")), "workerPoolSpecs[0].replicaCount=2"),
    "wrong module": (spec_with(m=("pythonModule: improve_nas.trainer.trainer", "pythonModule: trainer.trainer")),
                     "workerPoolSpecs[0].pythonPackageSpec.pythonModule='trainer.trainer'"),
    "L4 on an A2": (spec_with(m=machine("{machineType: a2-highgpu-4g, acceleratorType: NVIDIA_L4, "
                                        "acceleratorCount: 4}")),
                    "workerPoolSpecs[0].machineSpec.acceleratorType='NVIDIA_L4' does not fit machineType a2-highgpu"),
    "2 GPUs on a 4-GPU A2": (spec_with(m=machine("{machineType: a2-highgpu-4g, acceleratorType: NVIDIA_TESLA_A100, "
                                                 "acceleratorCount: 2}")),
                             "workerPoolSpecs[0].machineSpec.acceleratorCount=2 does not fit a2-highgpu-4g"),
    "A2 without its GPUs": (spec_with(m=machine("{machineType: a2-highgpu-1g}")),
                            "workerPoolSpecs[0].machineSpec.acceleratorType is required"),
    "8 T4s on an N1": (spec_with(m=("acceleratorCount: 1", "acceleratorCount: 8")),
                       "workerPoolSpecs[0].machineSpec.acceleratorCount=8"),
    "H100 on an N1": (spec_with(m=("NVIDIA_TESLA_T4", "NVIDIA_H100_80GB")),
                      "workerPoolSpecs[0].machineSpec.acceleratorType='NVIDIA_H100_80GB'"),
    "2 L4s on a small G2": (spec_with(m=machine("{machineType: g2-standard-8, acceleratorType: NVIDIA_L4, "
                                                "acceleratorCount: 2}")),
                            "workerPoolSpecs[0].machineSpec.acceleratorCount=2"),
    "GPU on a CPU machine": (spec_with(m=("n1-standard-8", "e2-standard-8")),
                             "workerPoolSpecs[0].machineSpec.acceleratorType='NVIDIA_TESLA_T4'"),
    "count without type": (spec_with(m=machine("{machineType: n1-standard-8, acceleratorCount: 1}")),
                           "workerPoolSpecs[0].machineSpec.acceleratorCount=1 needs an acceleratorType"),
    "type without count": (spec_with(m=machine("{machineType: n1-standard-8, acceleratorType: NVIDIA_TESLA_T4}")),
                           "missing required field workerPoolSpecs[0].machineSpec.acceleratorCount"),
    "misspelt key": (spec_with(m=("acceleratorType:", "acceleratorTyp:")),
                     "unknown key workerPoolSpecs[0].machineSpec.acceleratorTyp; did you mean acceleratorType"),
    "misspelt top-level key": (GOOD_SPEC + "tensorbord: projects/p/locations/l/tensorboards/1\n",
                               "unknown key tensorbord; did you mean tensorboard?"),
    "misspelt strategy": (GOOD_SPEC + "scheduling: {strategy: SPOTT}\n",
                          "scheduling.strategy='SPOTT' is invalid; did you mean SPOT?"),
    "tensorboard not a resource name": (GOOD_SPEC + "tensorboard: my-board\n",
                                        "tensorboard='my-board' must name a Vertex AI TensorBoard"),
    "web access as text": (GOOD_SPEC + "enableWebAccess: yes please\n", "enableWebAccess must be true or false"),
    "label with capitals": (GOOD_SPEC + "labels: {Team: nas}\n", "labels key 'Team'"),
    "both tasks": (spec_with(m=("    pythonPackageSpec:", "    containerSpec: {}\n    pythonPackageSpec:")),
                   "workerPoolSpecs[0] must have exactly one of containerSpec"),
    "no task": ("workerPoolSpecs:\n  - machineSpec: {machineType: n1-standard-8}\n    replicaCount: 1\n",
                "workerPoolSpecs[0] must have exactly one of containerSpec (this repository's image) or "
                "pythonPackageSpec (a prebuilt image); it has neither"),
    "container running something else": (CONTAINER_SPEC.replace("      args:", "      command: [bash]\n      args:"),
                                         "workerPoolSpecs[0].containerSpec.command=['bash'] must run the trainer"),
    "bad train flag in container args": (CONTAINER_SPEC.replace("--preset=smoke", "--learning_rate=3"),
                                         "workerPoolSpecs[0].containerSpec.args: unknown train flag --learning_rate"),
    "workers on another kind of task": (CONTAINER_SPEC + WORKER_POOL,
                                        "workerPoolSpecs[1] must run a containerSpec like workerPoolSpecs[0]"),
    "workers on another container": (CONTAINER_SPEC + CONTAINER_SPEC.split("workerPoolSpecs:\n")[1].replace(
        "      args: [--preset=smoke]", "      imageUri: gcr.io/p/other:1"),
        "workerPoolSpecs[1].containerSpec.imageUri must equal"),
    "known GPU on an unknown count": (spec_with(m=machine("{machineType: a3-highgpu-8g, acceleratorType: "
                                                          "NVIDIA_H100_80GB, acceleratorCount: 4}")),
                                      "workerPoolSpecs[0].machineSpec.acceleratorCount=4 does not fit a3-highgpu-8g"),
    "package URIs given": (spec_with(m=("      args:", "      packageUris: [gs://b/old.tar.gz]\n      args:")),
                           "workerPoolSpecs[0].pythonPackageSpec.packageUris must be empty"),
    "bad train flag in args": (spec_with(m=("[--preset=smoke]", "[--learning_rate=3]")),
                               "workerPoolSpecs[0].pythonPackageSpec.args: unknown train flag --learning_rate"),
    "three worker pools": (GOOD_SPEC + 2 * WORKER_POOL, "workerPoolSpecs holds 3 worker pools"),
    "two chief replicas with workers": (spec_with(m=("replicaCount: 1", "replicaCount: 2")) + WORKER_POOL,
                                        "workerPoolSpecs[0].replicaCount=2 must be 1"),
    "workers with their own args": (GOOD_SPEC + WORKER_POOL.replace("pythonModule:", "args: [--preset=smoke]\n"
                                                                    "      pythonModule:"),
                                    "workerPoolSpecs[1].pythonPackageSpec.args must be empty"),
    "workers on another image": (GOOD_SPEC + WORKER_POOL.replace("tf-gpu.2-17", "tf-gpu.2-15"),
                                 "workerPoolSpecs[1].pythonPackageSpec.executorImageUri must equal"),
    "no workers": (GOOD_SPEC + WORKER_POOL.replace("replicaCount: 1", "replicaCount: 0"),
                   "workerPoolSpecs[1].replicaCount=0 must be at least 1"),
    "pools not a list": ("workerPoolSpecs: {replicaCount: 1}\n", "workerPoolSpecs must be a list"),
    "small disk": (spec_with(m=("    replicaCount: 1\n", "    replicaCount: 1\n    diskSpec: {bootDiskSizeGb: 50}\n")),
                   "workerPoolSpecs[0].diskSpec.bootDiskSizeGb=50"),
    "timeout in days": (GOOD_SPEC + "scheduling: {timeout: 7d}\n", "scheduling.timeout='7d'"),
    "output dir not on gs": (GOOD_SPEC + "baseOutputDirectory: {outputUriPrefix: /tmp/out}\n",
                             "baseOutputDirectory.outputUriPrefix='/tmp/out' must be a gs:// URL"),
    "not YAML": ("workerPoolSpecs: [\n", "not valid YAML"),
    "empty file": ("", "the job spec must be a mapping"),
}


@pytest.fixture
def no_gcloud(tmp_path, monkeypatch):
    """A PATH without gcloud (this machine may have a real one, which must never run in tests)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def fake_tool(bin_dir, name, record, body=""):
    """An executable `name` in `bin_dir` that appends its arguments (and `body`'s findings) to `record` as JSON."""
    script = bin_dir / name
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        argv, found = sys.argv[1:], {{}}
        """) + textwrap.dedent(body) + textwrap.dedent(f"""\
        with open({str(record)!r}, "a") as log:
            log.write(json.dumps(dict(found, tool={name!r}, argv=argv)) + "\\n")
        """))
    script.chmod(0o755)


# The fake gcloud: `config get-value project` says my-project; `artifacts docker images describe` fails when the file
# image-missing exists next to the record; `builds submit` records the context's files and Dockerfile; the job spec
# given to `custom-jobs create` is recorded.
GCLOUD_BODY = """\
    here = os.path.dirname(os.environ["FAKE_RECORD"])
    if argv[:3] == ["config", "get-value", "project"]:
        print("my-project")
    if argv[:4] == ["artifacts", "docker", "images", "describe"] and os.path.exists(os.path.join(here, "image-missing")):
        sys.exit(1)
    config = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    found["spec"] = open(config[0]).read() if config else None
    if argv[:2] == ["builds", "submit"]:
        context = argv[-1]
        found["context"] = sorted(os.path.relpath(os.path.join(d, n), context).replace(os.sep, "/")
                                  for d, _, names in os.walk(context) for n in names)
        found["dockerfile"] = open(os.path.join(context, "Dockerfile")).read()
    """


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """A `gcloud` on PATH (and nothing else) that records its calls and succeeds; returns the record's path."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    record = tmp_path / "gcloud-calls.jsonl"
    fake_tool(bin_dir, "gcloud", record, GCLOUD_BODY)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_RECORD", str(record))
    return record


def calls(record, *prefix):
    """The recorded calls, those whose arguments start with `prefix` when given."""
    every = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return [call for call in every if call["argv"][:len(prefix)] == list(prefix)]


def run_cli(argv, capsys):
    """`improve-nas ARGV` in this process: (exit code, stdout, stderr)."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def submit_argv(config, *train, extra=()):
    return ["submit", f"--config={config}", "--region=us-central1", "--staging_bucket=gs://b", *extra, "--", *train]


# --- the job spec files -------------------------------------------------------------------------------------


def test_shipped_specs_are_container_jobs_of_this_repository_s_image(capsys):
    paper, smoke = load_job_spec(CONFIG), load_job_spec(CONFIG_TEST)
    for spec in (paper, smoke):
        pool = spec["workerPoolSpecs"][0]
        assert pool["replicaCount"] == 1 and "pythonPackageSpec" not in pool
        assert not pool["containerSpec"]["imageUri"]  # submit fills in the image of these sources
    assert paper["workerPoolSpecs"][0]["machineSpec"]["acceleratorCount"] > 1  # several GPUs, one machine
    assert smoke["workerPoolSpecs"][0]["machineSpec"]["acceleratorCount"] == 1
    assert paper["workerPoolSpecs"][0]["containerSpec"]["args"] == ["--preset=paper_cifar10"]
    assert smoke["workerPoolSpecs"][0]["containerSpec"]["args"] == ["--preset=smoke"]
    assert capsys.readouterr().err == ""  # no warning about the shipped files


@pytest.mark.parametrize("case", sorted(BROKEN_SPECS))
def test_broken_spec_exits_2_naming_the_field(case, tmp_path, capsys):
    text, fragment = BROKEN_SPECS[case]
    path = tmp_path / "job.yaml"
    path.write_text(text)
    code, out, err = run_cli(submit_argv(path, "--dataset=fake", extra=["--dry_run"]), capsys)  # never uploads
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}: ") and fragment in err and err.count("\n") == 1


def test_missing_spec_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        load_job_spec(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("case", ["L4 on an A2", "old ML Engine key", "wrong module"])
def test_broken_spec_exits_2_from_the_command_line(case, tmp_path):
    text, fragment = BROKEN_SPECS[case]
    (tmp_path / "job.yaml").write_text(text)
    result = subprocess.run(CLI + submit_argv(tmp_path / "job.yaml", "--dataset=fake", extra=["--dry_run"]),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and fragment in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("machine_type, accelerator, counts", [
    ("a2-highgpu-8g", "NVIDIA_TESLA_A100", (8,)),
    ("a2-ultragpu-2g", "NVIDIA_A100_80GB", (2,)),
    ("a3-highgpu-8g", "NVIDIA_H100_80GB", (8,)),
    ("g2-standard-48", "NVIDIA_L4", (4,)),
    ("n1-highmem-16", "NVIDIA_TESLA_V100", (1, 2, 4, 8)),
])
def test_machine_table(machine_type, accelerator, counts):
    rule = machines.accelerator_rule(machine_type)
    assert rule.accelerators[accelerator] == counts
    assert machines.accelerator_rule("z9-standard-4") is None


# Documented CustomJobSpec fields improve_nas does not use itself: accepted, passed through to the job.
EVERY_OTHER_FIELD = """
persistentResourceId: my-cluster
serviceAccount: trainer@my-project.iam.gserviceaccount.com
network: projects/123/global/networks/vpc
reservedIpRanges: [range-a]
tensorboard: projects/my-project/locations/us-central1/tensorboards/42
enableWebAccess: true
enableDashboardAccess: false
experiment: projects/p/locations/us-central1/metadataStores/default/contexts/exp
experimentRun: run-1
models: [projects/p/locations/us-central1/models/m]
protectedArtifactLocationId: us-central1
scheduling: {strategy: FLEX_START, maxWaitDuration: 3600s, disableRetries: true}
labels: {team: nas, cost-center: research}
"""


def test_every_documented_field_is_accepted_and_passed_on():
    pool_extras = ("    nfsMounts: [{server: 10.0.0.2, path: /share, mountPoint: data}]\n"
                   "    diskSpec: {bootDiskType: hyperdisk-balanced, bootDiskSizeGb: 200}\n")
    text = CONTAINER_SPEC.replace("    containerSpec:", pool_extras + "    containerSpec:").replace(
        "acceleratorCount: 1}", "acceleratorCount: 1, reservationAffinity: {reservationAffinityType: ANY_RESERVATION}}")
    spec = yaml.safe_load(text + EVERY_OTHER_FIELD)
    checked = validate_job_spec(spec)
    assert checked == spec and checked is not spec
    assert checked["workerPoolSpecs"][0]["nfsMounts"][0]["mountPoint"] == "data"


@pytest.mark.parametrize("strategy", ["SPOT", "FLEX_START", "STANDARD"])
def test_scheduling_strategies_are_accepted(strategy, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(CONTAINER_SPEC + f"scheduling: {{strategy: {strategy}}}\n")
    assert load_job_spec(str(path))["scheduling"]["strategy"] == strategy


# case -> (spec text, the warning, which must not stop the job)
WARNED_SPECS = {
    "unknown machine type": (spec_with(m=("n1-standard-8", "x9-mega-1")),
                             "workerPoolSpecs[0].machineSpec.machineType='x9-mega-1' is not in improve_nas's table"),
    "unknown accelerator": (spec_with(m=("NVIDIA_TESLA_T4", "NVIDIA_TESLA_T5")),
                            "acceleratorType='NVIDIA_TESLA_T5' is not an accelerator type this version knows; "
                            "did you mean NVIDIA_TESLA_T4"),
    "retired prebuilt image": (GOOD_SPEC, "tf-gpu.2-17.py310 reached its end of availability on 2026-07-11"),
    "unknown prebuilt image": (spec_with(m=("tf-gpu.2-17", "tf-gpu.2-99")),
                               "tf-gpu.2-99.py310:latest is not a Vertex AI prebuilt training image this version "
                               "knows; did you mean tf-gpu.2-17.py310"),
}


@pytest.mark.parametrize("case", sorted(WARNED_SPECS))
def test_doubtful_specs_warn_and_go_on(case, tmp_path, capsys):
    text, warning = WARNED_SPECS[case]
    path = tmp_path / "job.yaml"
    path.write_text(text)
    code, out, err = run_cli(submit_argv(path, "--dataset=fake", extra=["--dry_run"]), capsys)
    assert code == 0 and "workerPoolSpecs:" in out
    assert f"warning: {path}: " in err and warning in err
    assert all(line.startswith("warning: ") for line in err.splitlines())


def test_the_prebuilt_image_table_is_dated():
    uri = "europe-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest"
    [python] = image.prebuilt_image_warnings(uri, today=datetime.date(2026, 7, 11))  # its last day
    assert "runs Python 3.10, and improve_nas needs Python 3.11 or newer" in python
    retired, python_again = image.prebuilt_image_warnings(uri, today=datetime.date(2026, 7, 12))
    assert "end of availability on 2026-07-11" in retired and image.PREBUILT_TABLE_SOURCE in retired
    assert python_again == python
    assert image.prebuilt_image_warnings("gcr.io/me/mine:1") == []  # not a prebuilt image: nothing to say
    assert all(isinstance(date, datetime.date) for date in image.PREBUILT_IMAGES.values())


def test_the_minimum_python_of_prebuilt_images_is_the_package_s():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        requires = tomllib.load(handle)["project"]["requires-python"]
    assert requires == ">=" + ".".join(map(str, image.MIN_PYTHON))


# --- the container image: its Dockerfile against what the suite runs on (parsed; nothing is built here) ----------


def project_requirements():
    """Package name -> the version ranges pyproject.toml declares for it, in [project] dependencies and extras."""
    import tomllib  # Python 3.11+, like the Dockerfile

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]
    texts = project["dependencies"] + [text for extra in project["optional-dependencies"].values() for text in extra]
    ranges = {}
    for text in texts:
        requirement = Requirement(text)
        if requirement.name.lower() != "improve_nas":  # the extras' self-references, e.g. improve_nas[cloud,jax]
            ranges.setdefault(requirement.name.lower(), []).append(requirement.specifier)
    return ranges


def dockerfile():
    with open(DOCKERFILE) as handle:
        return handle.read()


def test_the_dockerfile_s_python_is_the_one_the_suite_runs_on():
    [base] = re.findall(r"^FROM (\S+)", dockerfile(), re.MULTILINE)
    assert re.fullmatch(r"python:(\d+)\.(\d+)-slim", base).groups() == tuple(map(str, sys.version_info[:2]))


@pytest.mark.parametrize("package_name, argument", [("tensorflow", "TENSORFLOW_VERSION"), ("keras", "KERAS_VERSION"),
                                                    ("jax", "JAX_VERSION")])
def test_the_dockerfile_pins_what_the_suite_runs_on_within_the_project_s_ranges(package_name, argument):
    from importlib.metadata import version

    pinned = Version(image.dockerfile_args(dockerfile())[argument])
    ranges = project_requirements()[package_name]
    assert ranges and all(pinned in specifier for specifier in ranges), (pinned, ranges)
    installed = Version(version(package_name))
    assert (pinned.major, pinned.minor) == (installed.major, installed.minor)


def test_the_dockerfile_runs_the_trainer_with_cuda_and_records_its_image():
    text = dockerfile()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert json.loads(entrypoint) == ["python", "-m", "improve_nas.trainer.trainer"]
    assert "tensorflow[and-cuda]==${TENSORFLOW_VERSION}" in text and "jax[cuda12]==${JAX_VERSION}" in text
    assert "KERAS_BACKEND=${BACKEND}" in text and "IMPROVE_NAS_IMAGE=${IMAGE}" in text
    assert '"/tmp/improve_nas-src[cloud]"' in text  # gs:// run directories need the cloud extra
    assert image.dockerfile_args(text)["BACKEND"] == "tensorflow" and "PIP_NO_CACHE_DIR=1" in text
    with open(os.path.join(ROOT, ".dockerignore")) as handle:
        ignored = handle.read().split()
    assert {".git", "tests", "**/__pycache__"} <= set(ignored)


# --- train flags ---------------------------------------------------------------------------------------------


def test_train_flags_mirror_the_trainer():
    from absl import flags

    import improve_nas.trainer.flags as trainer_flags

    defined = flags.FLAGS.flags_by_module_dict()[trainer_flags.__name__]
    kinds = {flag.name: {"int": int, "bool": bool}.get(flag.flag_type(), str) for flag in defined}
    assert kinds == train_flags.TRAIN_FLAGS
    assert train_flags.CONFIG_FLAGS == trainer_flags.CONFIG_FLAGS


def test_train_flags_parse_both_absl_forms_and_override_key_by_key():
    base = train_flags.parse_train_flags(["--preset=smoke", "--batch_size", "8", "--tf_random_seed", "-1"])
    assert base == {"preset": "smoke", "batch_size": "8", "tf_random_seed": "-1"}
    merged = train_flags.merge_train_flags(base, {"batch_size": "4", "dataset": "fake"})
    assert train_flags.format_train_flags(merged) == [
        "--preset=smoke", "--batch_size=4", "--tf_random_seed=-1", "--dataset=fake"]
    # Boolean flags: --flag, --noflag or --flag=VALUE, as absl takes them; passed on as --flag=VALUE.
    assert train_flags.parse_train_flags(["--force_unlock", "--preset=smoke"]) == {"force_unlock": "true",
                                                                                   "preset": "smoke"}
    assert train_flags.parse_train_flags(["--noforce_unlock"]) == {"force_unlock": "false"}
    assert train_flags.format_train_flags({"force_unlock": "true"}) == ["--force_unlock=true"]


@pytest.mark.parametrize("argv, fragment", [
    (["--learning_rate=3"], "unknown train flag --learning_rate"),
    (["--batch_size=many"], "--batch_size='many' is not an integer"),
    (["--batch_size"], "needs a value"),
    (["--force_unlock=maybe"], "--force_unlock='maybe' is not true or false"),
    (["smoke"], "unexpected argument 'smoke'"),
])
def test_bad_train_flags(argv, fragment):
    with pytest.raises(UsageError, match=fragment.replace("[", r"\[")):
        train_flags.parse_train_flags(argv)


# --- plan: everything checked before anything happens -------------------------------------------------------


def plan(*train, config=CONFIG_TEST, **request):
    request = dict(dict(config_path=config, region="us-central1", staging_bucket="gs://b"), **request)
    return plan_job(SubmitRequest(train_flags=train, **request))


def test_plan_merges_args_adds_the_run_directory_and_names_the_image():
    job = plan("--preset=quickstart", "--train_steps=9", display_name="try-1", project="my-project")
    pool = job.spec["workerPoolSpecs"][0]["containerSpec"]
    assert pool["args"] == ["--preset=quickstart", "--train_steps=9", "--job-dir=gs://b/improve_nas/runs/try-1"]
    assert job.run_dir == "gs://b/improve_nas/runs/try-1"
    source = package.find_source_tree()
    assert pool["imageUri"] == job.image == (f"us-central1-docker.pkg.dev/my-project/improve-nas/trainer:"
                                             f"{source.version}-{source.digest}")
    assert job.default_image.uri == job.image and job.package_uri is None
    assert job.config.train_steps == 9 and job.config.dataset == "digits"  # the quickstart preset's
    assert load_job_spec(CONFIG_TEST)["workerPoolSpecs"][0]["containerSpec"]["args"] == ["--preset=smoke"]
    assert "trainer-jax:" in plan(backend="jax", project="my-project").image
    assert "/PROJECT/improve-nas/" in plan().image  # named once the project is known
    given = plan(image="gcr.io/me/improve-nas:7")
    assert given.image == "gcr.io/me/improve-nas:7" and given.default_image is None


def test_a_package_job_names_the_package(tmp_path):
    config = tmp_path / "package.yaml"
    config.write_text(GOOD_SPEC)
    job = plan(config=str(config), display_name="try-1")
    pool = job.spec["workerPoolSpecs"][0]["pythonPackageSpec"]
    assert pool["packageUris"] == [job.package_uri] and job.image is None
    assert job.package_uri.startswith("gs://b/improve_nas/packages/improve_nas-")
    assert job.package_uri.endswith(".tar.gz")
    for flag in ({"image": "gcr.io/me/x:1"}, {"build_image": True}, {"backend": "jax"}):
        with pytest.raises(UsageError, match="is for container jobs"):
            plan(config=str(config), **flag)


def test_a_worker_pool_runs_the_chief_s_package_and_args_and_needs_multi_worker(tmp_path):
    config = tmp_path / "workers.yaml"
    config.write_text(GOOD_SPEC + WORKER_POOL.replace("replicaCount: 1", "replicaCount: 3"))
    job = plan("--distribution=multi_worker", config=str(config), display_name="mw")
    chief, workers = job.spec["workerPoolSpecs"]
    assert workers["replicaCount"] == 3 and chief["replicaCount"] == 1
    assert workers["pythonPackageSpec"]["args"] == chief["pythonPackageSpec"]["args"] == [
        "--preset=smoke", "--distribution=multi_worker", "--job-dir=gs://b/improve_nas/runs/mw"]
    assert workers["pythonPackageSpec"]["packageUris"] == chief["pythonPackageSpec"]["packageUris"] == [
        job.package_uri]
    with pytest.raises(UsageError, match="a second worker pool .* needs --distribution=multi_worker"):
        plan(config=str(config))
    with pytest.raises(UsageError, match="--distribution=multi_worker needs one; .* has 1 pool"):
        plan("--distribution=multi_worker")


def test_plan_keeps_a_given_run_directory_or_vertex_output_directory(tmp_path):
    job = plan("--model_dir=gs://runs/cifar", display_name="x")
    assert job.run_dir == "gs://runs/cifar"
    assert not any(arg.startswith("--job-dir") for arg in job.spec["workerPoolSpecs"][0]["containerSpec"]["args"])
    spec = tmp_path / "job.yaml"
    spec.write_text(GOOD_SPEC + "baseOutputDirectory: {outputUriPrefix: gs://out/job}\n")
    job = plan(config=str(spec), display_name="x")
    assert job.run_dir == "gs://out/job/model"  # the AIP_MODEL_DIR Vertex AI sets
    assert job.spec["workerPoolSpecs"][0]["pythonPackageSpec"]["args"] == ["--preset=smoke"]


@pytest.mark.parametrize("train, request_, fragment", [
    (["--hparams=num_cels=3"], {}, "num_cels"),
    (["--hparams=optimizer=adamw"], {}, "adamw"),
    (["--preset=paper"], {}, "unknown preset 'paper'"),
    (["--dataset=cifar11"], {}, "cifar11"),
    (["--data_params=augmentation=inception"], {}, "inception"),
    (["--save_checkpoints_steps=5", "--save_checkpoints_secs=5"], {}, "save_checkpoints"),
    (["--model_dir=/tmp/run"], {}, "must be a gs:// URL"),
    ([], {"region": "us central"}, "--region='us central'"),
    ([], {"staging_bucket": "b"}, "--staging_bucket"),
    ([], {"staging_bucket": "gs://Bucket"}, "--staging_bucket"),
    ([], {"display_name": "my job"}, "--display_name='my job'"),
    ([], {"project": "Bad Project"}, "--project='Bad Project'"),
    ([], {"backend": "torch"}, "--backend='torch' is invalid; choose one of: tensorflow, jax"),
])
def test_plan_refuses_bad_input(train, request_, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        plan(*train, **request_)


def test_missing_dataset_is_refused(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(spec_with(m=("[--preset=smoke]", "[]")))
    with pytest.raises(UsageError, match="--dataset is required"):
        plan(config=str(spec))


def test_bad_hparam_exits_2_before_anything_is_uploaded(gcs_emulator, fake_gcloud, capsys):
    code, out, err = run_cli(submit_argv(CONFIG_TEST, "--hparams=num_cells=4"), capsys)
    assert code == 2 and err.startswith("error: ") and "num_cells=4" in err
    assert gcs.list_blobs("gs://b") == [] and calls(fake_gcloud) == []


# --- dry run ------------------------------------------------------------------------------------------------


def test_the_issue_dry_run_command_prints_a_container_job_and_touches_nothing(gcs_emulator, fake_gcloud):
    result = subprocess.run(
        CLI + ["submit", "--config=config_test.yaml", "--region=us-central1", "--staging_bucket=gs://b",
               "--dry_run", "--", "--preset=smoke", "--dataset=fake"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(result.stdout)  # comments + the resolved spec: valid YAML
    pool = spec["workerPoolSpecs"][0]["containerSpec"]
    assert pool["args"][:2] == ["--preset=smoke", "--dataset=fake"]
    source = package.find_source_tree(ROOT)
    match = IMAGE_URI.fullmatch(pool["imageUri"])
    assert match and match["project"] == "PROJECT" and match["name"] == "trainer"  # no project given: said so
    assert (match["version"], match["digest"]) == (source.version, source.digest)
    assert "PROJECT stands for the project submit will use" in result.stdout
    assert f"gcloud artifacts docker images describe {pool['imageUri']}" in result.stdout
    assert f"gcloud builds submit --tag={pool['imageUri']} --project=PROJECT CONTEXT" in result.stdout
    assert "gcloud ai custom-jobs create --region=us-central1 --display-name=improve_nas_smoke_" in result.stdout
    assert gcs.list_blobs("gs://b") == []  # nothing uploaded
    assert calls(fake_gcloud) == []  # nothing asked, built or created
    assert not os.path.exists(os.path.join(ROOT, "dist"))


@pytest.mark.parametrize("extra_fields", [
    "tensorboard: projects/my-project/locations/us-central1/tensorboards/7\n"
    "serviceAccount: trainer@my-project.iam.gserviceaccount.com\n",
    "scheduling: {strategy: SPOT, timeout: 3600s}\n",
    "labels: {team: nas}\n",
])
def test_a_dry_run_passes_the_other_fields_on(extra_fields, tmp_path, fake_gcloud, capsys):
    config = tmp_path / "job.yaml"
    config.write_text(CONTAINER_SPEC + extra_fields)
    code, out, err = run_cli(submit_argv(config, "--dataset=fake", extra=["--dry_run", "--project=my-project"]),
                             capsys)
    assert code == 0 and err == ""
    printed, written = yaml.safe_load(out), yaml.safe_load(extra_fields)
    labels = written.pop("labels", None)
    assert {key: printed[key] for key in written} == written
    if labels:  # a CustomJob field: on gcloud's command line, not in the spec file gcloud reads
        assert "labels" not in printed and "--config=job.yaml --project=my-project --labels=team=nas" in out
    assert calls(fake_gcloud) == []


def test_a_dry_run_with_build_image_prints_the_docker_commands_without_gcloud(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_tool(bin_dir, "docker", tmp_path / "docker.jsonl")
    monkeypatch.setenv("PATH", str(bin_dir))
    code, out, _ = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--dry_run", "--build_image",
                                                                             "--backend=jax", "--project=p-123456"]),
                           capsys)
    uri = yaml.safe_load(out)["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    assert code == 0 and IMAGE_URI.fullmatch(uri)["name"] == "trainer-jax"
    assert f"docker build -t {uri} CONTEXT" in out and f"docker push {uri}" in out
    assert "images describe" not in out  # built, so not looked up
    assert not (tmp_path / "docker.jsonl").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, out, _ = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--dry_run", "--build_image"]), capsys)
    assert code == 0 and "(would fail: --build_image needs gcloud (Cloud Build) or docker on PATH" in out


# --- packaging ----------------------------------------------------------------------------------------------


# --- submit -------------------------------------------------------------------------------------------------


def uploaded_package(url):
    """Member names of the sdist stored at `url`."""
    import io

    with tarfile.open(fileobj=io.BytesIO(gcs.read_bytes(url))) as sdist:
        return sdist.getnames()


def test_submit_without_gcloud_uploads_the_package_and_posts_the_job(gcs_emulator, no_gcloud, monkeypatch, tmp_path):
    posted = []
    monkeypatch.setattr(vertex, "post_json", lambda url, body: posted.append((url, body)) or {"name": "jobs/1"})
    config = tmp_path / "package.yaml"
    config.write_text(GOOD_SPEC)
    request = SubmitRequest(config_path=str(config), region="us-central1", staging_bucket="gs://b",
                            train_flags=("--dataset=fake", "--train_steps=6"), display_name="smoke-1",
                            project="my-project")
    lines = []
    submission = submit(request, log=lines.append)
    assert submission.created_with == "rest" and submission.job_name == "jobs/1"
    [(url, body)] = posted
    assert url == ("https://us-central1-aiplatform.googleapis.com/v1/"
                   "projects/my-project/locations/us-central1/customJobs")
    assert body["displayName"] == "smoke-1" and "labels" not in body
    pool = body["jobSpec"]["workerPoolSpecs"][0]["pythonPackageSpec"]
    assert pool["pythonModule"] == "improve_nas.trainer.trainer"
    assert pool["args"] == ["--preset=smoke", "--dataset=fake", "--train_steps=6",
                            "--job-dir=gs://b/improve_nas/runs/smoke-1"]
    [package_uri] = pool["packageUris"]
    assert [obj.url for obj in gcs.list_blobs("gs://b")] == [package_uri]
    names = uploaded_package(package_uri)
    assert any(name.endswith("improve_nas/trainer/trainer.py") for name in names)
    assert any(name.endswith("/pyproject.toml") for name in names)

    submit(request, log=lines.append)  # same sources: the upload is skipped
    assert any("already uploaded" in line for line in lines)
    assert len(posted) == 2


class FakeRegistry:
    """Stands in for google.auth's AuthorizedSession: Artifact Registry answers `status` to every GET."""

    urls = []
    status = 200

    def __init__(self, credentials):
        pass

    def get(self, url, timeout):
        FakeRegistry.urls.append(url)
        return type("Response", (), {"status_code": FakeRegistry.status, "text": "{}"})()


def test_a_container_job_without_gcloud_checks_the_image_and_posts_the_job_with_labels(no_gcloud, monkeypatch,
                                                                                        tmp_path):
    import google.auth.transport.requests

    posted = []
    monkeypatch.setattr(vertex, "post_json", lambda url, body: posted.append((url, body)) or {"name": "jobs/2"})
    monkeypatch.setattr(vertex, "_credentials", lambda: (object(), "adc-project"))
    monkeypatch.setattr(google.auth.transport.requests, "AuthorizedSession", FakeRegistry)
    monkeypatch.setattr(FakeRegistry, "urls", [])
    config = tmp_path / "job.yaml"
    config.write_text(CONTAINER_SPEC + "labels: {team: nas}\nscheduling: {strategy: SPOT}\n")
    request = SubmitRequest(config_path=str(config), region="us-central1", staging_bucket="gs://b",
                            train_flags=("--dataset=fake",), display_name="c-1")
    assert submit(request, log=lambda line: None).job_name == "jobs/2"
    [(url, body)] = posted
    assert "/projects/adc-project/" in url and body["labels"] == {"team": "nas"}
    assert body["jobSpec"]["scheduling"] == {"strategy": "SPOT"} and "labels" not in body["jobSpec"]
    uri = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    ref = IMAGE_URI.fullmatch(uri)
    assert ref["project"] == "adc-project"  # the credentials' project names the image
    assert FakeRegistry.urls == [f"https://artifactregistry.googleapis.com/v1/projects/adc-project/locations/"
                                 f"us-central1/repositories/improve-nas/packages/trainer/tags/{uri.split(':')[-1]}"]
    monkeypatch.setattr(FakeRegistry, "status", 404)
    with pytest.raises(UsageError, match="the image .* does not exist yet .* add --build_image"):
        submit(request, log=lambda line: None)
    assert len(posted) == 1  # no job for a missing image


def test_submit_with_gcloud_checks_the_image_and_creates_the_job_through_it(fake_gcloud, capsys):
    code, out, err = run_cli(submit_argv(CONFIG, "--data_dir=gs://b/tfds", extra=["--display_name=paper-1"]), capsys)
    assert code == 0, err
    project, describe, create = calls(fake_gcloud)
    assert project["argv"] == ["config", "get-value", "project"]
    spec = yaml.safe_load(create["spec"])
    uri = spec["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    assert IMAGE_URI.fullmatch(uri)["project"] == "my-project"  # gcloud's project
    assert describe["argv"] == ["artifacts", "docker", "images", "describe", uri, "--quiet"]
    argv = create["argv"]
    assert argv[:5] == ["ai", "custom-jobs", "create", "--region=us-central1", "--display-name=paper-1"]
    assert argv[5].startswith("--config=") and len(argv) == 6
    pool = spec["workerPoolSpecs"][0]
    assert pool["machineSpec"] == {"machineType": "a2-highgpu-4g", "acceleratorType": "NVIDIA_TESLA_A100",
                                   "acceleratorCount": 4}
    assert pool["containerSpec"]["args"] == ["--preset=paper_cifar10", "--data_dir=gs://b/tfds",
                                             "--job-dir=gs://b/improve_nas/runs/paper-1"]
    assert f"image {uri} found" in out and "gcloud ai custom-jobs create" in out


def test_a_missing_image_is_refused_before_the_job_is_created(fake_gcloud, capsys):
    (fake_gcloud.parent / "image-missing").write_text("")
    code, _, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake"), capsys)
    assert code == 2 and err.count("\n") == 1 and "does not exist yet" in err and "--build_image" in err
    assert calls(fake_gcloud, "ai") == []


def test_build_image_builds_the_staged_sources_with_cloud_build_then_creates_the_job(fake_gcloud, capsys):
    (fake_gcloud.parent / "image-missing").write_text("")  # built, so never looked up
    code, out, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--build_image"]), capsys)
    assert code == 0, err
    [build] = calls(fake_gcloud, "builds")
    uri = yaml.safe_load(calls(fake_gcloud, "ai")[0]["spec"])["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    assert build["argv"][:4] == ["builds", "submit", f"--tag={uri}", "--project=my-project"]
    assert {"Dockerfile", "pyproject.toml", "improve_nas/trainer/trainer.py"} <= set(build["context"])
    assert not any(name.startswith("tests/") for name in build["context"])
    arguments = image.dockerfile_args(build["dockerfile"])
    assert arguments["IMAGE"] == uri and arguments["BACKEND"] == "tensorflow"  # gcloud --tag passes no build args
    assert calls(fake_gcloud, "artifacts") == []
    assert out.index("gcloud builds submit") < out.index("gcloud ai custom-jobs create")


def test_build_image_uses_docker_without_gcloud(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "docker.jsonl"
    fake_tool(bin_dir, "docker", record)
    monkeypatch.setenv("PATH", str(bin_dir))
    posted = []
    monkeypatch.setattr(vertex, "post_json", lambda url, body: posted.append(body) or {"name": "jobs/3"})
    code, _, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--build_image", "--project=p-123456",
                                                                             "--backend=jax"]), capsys)
    assert code == 0, err
    build, push = calls(record)
    uri = posted[0]["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"]
    assert IMAGE_URI.fullmatch(uri)["name"] == "trainer-jax"
    assert build["argv"][:3] == ["build", "-t", uri] and push["argv"] == ["push", uri]


def test_build_image_without_gcloud_or_docker_is_one_line(no_gcloud, capsys):
    code, _, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--build_image", "--project=p-123456"]),
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "needs gcloud (Cloud Build) or docker on PATH" in err


def test_failing_gcloud_is_a_one_line_error(fake_gcloud, capsys):
    script = os.path.join(os.environ["PATH"], "gcloud")
    with open(script, "a") as handle:
        handle.write("sys.exit(1)\n")
    code, _, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--image=gcr.io/me/x:1"]), capsys)
    assert code == 2 and "exit code 1" in err.splitlines()[-1]
    code, _, err = run_cli(submit_argv(CONFIG_TEST, "--dataset=fake", extra=["--build_image", "--project=p-123456"]),
                           capsys)
    assert code == 2 and err.count("\n") == 1
    assert "gcloud builds failed with exit code 1" in err and "artifacts repositories create improve-nas" in err
