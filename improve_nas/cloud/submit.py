"""`improve-nas submit`: check everything locally, then provide the code and create the Vertex AI custom job.

    plan_job      spec file + train flags -> the resolved CustomJobSpec (no writes, no network)
    submit        plan, then provide the code (container jobs: check that the image exists, or build and push it
                  with --build_image; package jobs: build the sdist and upload it to the staging bucket), then
                  create the job (gcloud or REST),
                  and with `wait` follow it until it ends

Every check that can fail (spec, flags, hparams, preset, dataset name, run directory) runs in `plan_job`, before
anything is built or uploaded. The run directory defaults to `--job-dir=gs://BUCKET/improve_nas/runs/<display name>`
in the job's args, where it is visible in the spec and means the same as on a local run; re-submitting with the
same display name therefore resumes that run. A spec that sets `baseOutputDirectory` instead gets no --job-dir: the
trainer then uses the AIP_MODEL_DIR Vertex AI derives from it (`<baseOutputDirectory>/model/`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from typing import Any, Callable

from improve_nas.cloud import image, jobs, package, train_flags, vertex
from improve_nas.cloud.spec import load_job_spec, task_of
from improve_nas.config import Config
from improve_nas.errors import UsageError
from improve_nas.storage import gcs

_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # also a path segment of the run directory
CONFIG_FILE_NAME = "job.yaml"
BUILD_CONTEXT = "CONTEXT"  # how a dry run names the staged build context (a temporary directory)


@dataclasses.dataclass(frozen=True)
class SubmitRequest:
    """What `improve-nas submit` was asked to do.

    Attributes:
      config_path: the CustomJobSpec YAML (config.yaml, config_test.yaml).
      region: Vertex AI region, e.g. us-central1.
      staging_bucket: gs://BUCKET[/PREFIX]; the package goes to `<it>/improve_nas/packages/`, and the run
        directory defaults to `<it>/improve_nas/runs/<display name>`.
      train_flags: trainer flags (absl syntax); they override the spec's args key by key.
      display_name: the job's name in Vertex AI; defaults to improve_nas_<preset or dataset>_<UTC time>.
      project: Google Cloud project; defaults to gcloud's or the credentials' project.
      dry_run: print the resolved spec and commands; build, push, upload and create nothing.
      image: the container image of a containerSpec job (default: the spec's imageUri, else the image of this
        repository's Dockerfile, see `image.default_image`).
      build_image: build the container image and push it (gcloud builds submit, or docker build + push) first.
      backend: the Keras backend of the default image (tensorflow, or jax for the `trainer-jax` variant).
      wait: once created, print the job's log until it ends (jobs.follow_until_done).
    """

    config_path: str
    region: str
    staging_bucket: str
    train_flags: tuple[str, ...] = ()
    display_name: str | None = None
    project: str | None = None
    dry_run: bool = False
    image: str | None = None
    build_image: bool = False
    backend: str = "tensorflow"
    wait: bool = False


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """A checked, fully resolved job.

    Attributes:
      display_name: the job's name.
      region: its region.
      project: the project given on the command line, if any.
      spec: the CustomJobSpec to create: the image or packageUris filled in, args merged.
      task: what the workers run, `containerSpec` or `pythonPackageSpec`.
      package_uri: where the package is (or will be) uploaded (package jobs).
      image: the container image URI (container jobs).
      default_image: the image when it is the one this repository's Dockerfile builds (submit checks that it
        exists, or builds it); None when the image came from --image or the spec.
      build_image: build and push `image` before creating the job.
      backend: the Keras backend the image is built for.
      labels: the CustomJob's labels (the spec file's `labels`).
      run_dir: the run directory on gs:// the trainer will use.
      source: the source files packaged.
      config: the training configuration the trainer will resolve from the args.
    """

    display_name: str
    region: str
    project: str | None
    spec: dict[str, Any]
    task: str
    package_uri: str | None
    image: str | None
    default_image: image.ImageRef | None
    build_image: bool
    backend: str
    labels: dict[str, str]
    run_dir: str
    source: package.SourceTree
    config: Config

    def gcloud_command(self, config_path: str, gcloud: str = "gcloud", print_name: bool = False) -> list[str]:
        command = vertex.gcloud_command(region=self.region, display_name=self.display_name,
                                        config_path=config_path, project=self.project, gcloud=gcloud,
                                        print_name=print_name)
        labels = ",".join(f"{key}={value}" for key, value in self.labels.items())
        return command + ([f"--labels={labels}"] if labels else [])

    def job_body(self) -> dict[str, Any]:
        """The CustomJob resource the REST API creates."""
        return {"displayName": self.display_name, "jobSpec": self.spec, **({"labels": self.labels} if self.labels
                                                                            else {})}

    def with_image_project(self, project: str) -> JobPlan:
        """The plan with the default image placed in `project` (resolved once the project is known)."""
        ref = dataclasses.replace(self.default_image, project=project)
        spec = copy.deepcopy(self.spec)
        for pool in spec["workerPoolSpecs"]:
            pool["containerSpec"]["imageUri"] = ref.uri
        return dataclasses.replace(self, spec=spec, image=ref.uri, default_image=ref)

    def spec_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.spec, sort_keys=False, default_flow_style=False)


@dataclasses.dataclass(frozen=True)
class Submission:
    """The outcome: the plan, how the job was created (`dry_run`: not at all; `gcloud`; `rest`), the created job's
    resource name (through gcloud only when waiting: it then prints it), and with `wait` the job's final state
    (None: not waited for, or Ctrl-C) and the command's exit code (jobs.follow_until_done)."""

    plan: JobPlan
    created_with: str
    job_name: str | None = None
    final_state: str | None = None
    exit_code: int = 0


def plan_job(request: SubmitRequest, *, source_root: str | None = None,
             now: datetime.datetime | None = None) -> JobPlan:
    """Checks the request and resolves the job; reads files, writes nothing, uses no network.

    Args:
      request: the command line.
      source_root: the checkout to package (default: the one this module was imported from).
      now: the time the default display name is stamped with (default: now, UTC).

    Raises:
      UsageError: any bad input, named with the valid choices.
    """
    staging = _staging_prefix(request.staging_bucket)
    vertex.check_location(request.region, request.project)
    if request.backend not in image.BACKENDS:
        raise UsageError(f"--backend={request.backend!r} is invalid; choose one of: {', '.join(image.BACKENDS)}")
    spec = load_job_spec(request.config_path)
    labels = spec.pop("labels", {})  # a CustomJob field, not a CustomJobSpec one: gcloud --labels / REST labels
    task = task_of(spec["workerPoolSpecs"][0])
    flags = train_flags.merge_train_flags(
        train_flags.parse_train_flags(spec["workerPoolSpecs"][0][task].get("args") or [],
                                      origin=f"{request.config_path} args"),
        train_flags.parse_train_flags(request.train_flags))
    display_name = request.display_name or _default_display_name(flags, now)
    if not _DISPLAY_NAME.fullmatch(display_name):
        raise UsageError(f"--display_name={display_name!r} must be 1-128 letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit")
    run_dir = train_flags.model_dir_flag(flags)
    if run_dir is None and "baseOutputDirectory" in spec:
        run_dir = spec["baseOutputDirectory"]["outputUriPrefix"].rstrip("/") + "/model"  # Vertex's AIP_MODEL_DIR
    if run_dir is None:
        run_dir = flags["job-dir"] = f"{staging}/improve_nas/runs/{display_name}"
    if not gcs.is_gs_url(run_dir):
        raise UsageError(f"the job's run directory {run_dir!r} must be a gs:// URL: the training machine's disk is "
                         "deleted when the job ends")
    gcs.parse_gs_url(run_dir)  # a malformed bucket name fails here, not on the training machine
    config = train_flags.resolve_train_config(flags, model_dir=run_dir)
    workers = len(spec["workerPoolSpecs"]) > 1
    if workers != (config.distribution == "multi_worker"):
        raise UsageError("a second worker pool (workerPoolSpecs[1]) needs --distribution=multi_worker, and "
                         f"--distribution=multi_worker needs one; {request.config_path} has "
                         f"{len(spec['workerPoolSpecs'])} pool(s) and the flags say --distribution={config.distribution}")
    source = package.find_source_tree(source_root)
    resolved = copy.deepcopy(spec)
    package_uri = image_uri = default_image = None
    if task == "pythonPackageSpec":
        given = [flag for flag, value in (("--image", request.image), ("--build_image", request.build_image),
                                          ("--backend", request.backend != "tensorflow")) if value]
        if given:
            raise UsageError(f"{given[0]} is for container jobs (containerSpec), and {request.config_path} runs a "
                             "Python package (pythonPackageSpec) on the prebuilt image its executorImageUri names")
        package_uri = f"{staging}/improve_nas/packages/{source.archive_name}"
    else:
        image_uri = request.image or resolved["workerPoolSpecs"][0]["containerSpec"].get("imageUri")
        if not image_uri:
            default_image = image.default_image(region=request.region, source=source, backend=request.backend,
                                                project=request.project or vertex.PROJECT_PLACEHOLDER)
            image_uri = default_image.uri
    for pool in resolved["workerPoolSpecs"]:  # the workers run exactly what the chief runs
        if task == "pythonPackageSpec":
            pool[task]["packageUris"] = [package_uri]
        else:
            pool[task]["imageUri"] = image_uri
        pool[task]["args"] = train_flags.format_train_flags(flags)
    return JobPlan(display_name=display_name, region=request.region, project=request.project, spec=resolved,
                   task=task, package_uri=package_uri, image=image_uri, default_image=default_image,
                   build_image=request.build_image, backend=request.backend, labels=labels, run_dir=run_dir,
                   source=source, config=config)


def submit(request: SubmitRequest, *, source_root: str | None = None,
           log: Callable[[str], None] = print) -> Submission:
    """Plans the job; unless `request.dry_run`, provides its code (image or package) and creates the job.

    Args:
      request: the command line.
      source_root: the checkout to package (default: the one this module was imported from).
      log: where progress lines go (stdout by default).

    Returns:
      What was done.

    Raises:
      UsageError: bad input, a missing image, an unreachable bucket, a failed build, or a refused job.
    """
    plan = plan_job(request, source_root=source_root)
    if request.dry_run:
        log(render_dry_run(plan))
        if request.wait:
            log(f"#   then (--wait) with {vertex.NAME_FORMAT} added, follow the job's log until it ends: "
                f"improve-nas jobs logs JOB_ID --region={plan.region}")
        return Submission(plan, created_with="dry_run")
    gcloud = vertex.find_gcloud()
    project = plan.project or (None if gcloud else vertex.default_project())  # REST needs it: fail before uploading
    if plan.default_image and not plan.project:  # the image's URI names the project
        plan = plan.with_image_project(project or _gcloud_project(gcloud) or vertex.default_project())
    with tempfile.TemporaryDirectory(prefix="improve_nas-submit-") as work:
        if plan.task == "pythonPackageSpec":
            _upload_package(plan, work, log)
        else:
            _provide_image(plan, work, log, gcloud)
        if gcloud:
            config_path = os.path.join(work, CONFIG_FILE_NAME)
            with open(config_path, "w", encoding="utf-8") as handle:
                handle.write(plan.spec_yaml())
            command = plan.gcloud_command(config_path, gcloud=gcloud, print_name=request.wait)
            log(f"$ {shlex.join(command)}")
            printed = vertex.run_gcloud(command, capture=request.wait).split()
            submission = Submission(plan, created_with="gcloud", job_name=printed[-1] if printed else None)
    if not gcloud:
        job = vertex.post_json(vertex.custom_jobs_url(region=plan.region, project=project), plan.job_body())
        log(f"created Vertex AI custom job {job.get('name', plan.display_name)}; run directory {plan.run_dir}")
        submission = Submission(plan, created_with="rest", job_name=job.get("name"))
    return _wait_for(submission, log) if request.wait else submission


def _wait_for(submission: Submission, log: Callable[[str], None]) -> Submission:
    if not submission.job_name:
        raise UsageError(f"the job was created, but gcloud printed no resource name to follow it by; find it with "
                         f"improve-nas jobs list --region={submission.plan.region}")
    state, exit_code = jobs.follow_until_done(submission.job_name, region=submission.plan.region,
                                              project=submission.plan.project, log=log)
    return dataclasses.replace(submission, final_state=state, exit_code=exit_code)


def render_dry_run(plan: JobPlan) -> str:
    """The resolved spec and the commands a real submit would run, as YAML (comments + the spec document)."""
    lines = [
        "# improve-nas submit --dry_run: nothing was built, pushed, uploaded or created.",
        f"# Resolved Vertex AI CustomJobSpec ({CONFIG_FILE_NAME}) of job {plan.display_name!r}:",
        plan.spec_yaml().rstrip("\n"),
        "# A real submit would:",
        *[f"#   {line}" for line in _code_steps(plan)],
        f"#   2. run: {shlex.join(plan.gcloud_command(CONFIG_FILE_NAME))}",
        "#      (without gcloud on PATH: POST "
        f"{vertex.custom_jobs_url(region=plan.region, project=plan.project or vertex.PROJECT_PLACEHOLDER)})",
        f"# Run directory: {plan.run_dir}",
    ]
    if plan.default_image and not plan.project:
        lines.append(f"# {vertex.PROJECT_PLACEHOLDER} stands for the project submit will use: --project, else gcloud's or "
                     "the credentials' project.")
    return "\n".join(lines)


def _code_steps(plan: JobPlan) -> list[str]:
    """Step 1 of a real submit, what it does before creating the job, for the dry run."""
    if plan.task == "pythonPackageSpec":
        return [f"1. build the sdist of {plan.source.root} and upload it to {plan.package_uri}"]
    if not (plan.build_image or plan.default_image):
        return [f"1. use the image {plan.image} as given (--image or the spec's imageUri; not checked)"]
    try:
        build = [shlex.join(command) for command in image.build_commands(
            plan.image, BUILD_CONTEXT, project=_image_project(plan),
            which=lambda name: name if shutil.which(name) else None)]
    except UsageError as error:
        build = [f"(would fail: {error})"]
    stage = f"stage the sources and {image.DOCKERFILE} in a temporary directory {BUILD_CONTEXT}, then run:"
    if plan.build_image:
        return [f"1. build and push the image: {stage}", *[f"     {command}" for command in build]]
    return [f"1. check that the image exists: {shlex.join(image.describe_command(plan.default_image))}",
            "   and stop if it does not. To build and push it, add --build_image; it would " + stage,
            *[f"     {command}" for command in build]]


def _provide_image(plan: JobPlan, work: str, log: Callable[[str], None], gcloud: str | None) -> None:
    """Builds and pushes the job's image when asked; otherwise makes sure this repository's image exists."""
    if plan.build_image:
        context = image.stage_build_context(plan.source, os.path.join(work, "image"), image_uri=plan.image,
                                            backend=plan.backend)
        image.run_build(image.build_commands(plan.image, context, project=_image_project(plan)), log)
    elif plan.default_image:
        if not image.image_exists(plan.default_image, gcloud=gcloud):
            raise UsageError(f"the image {plan.image} does not exist yet (it is named after these sources); add "
                             "--build_image to build and push it, or pass --image=URI of an image you built")
        log(f"image {plan.image} found")


def _image_project(plan: JobPlan) -> str | None:
    return plan.default_image.project if plan.default_image else plan.project


def _gcloud_project(gcloud: str | None) -> str | None:
    """gcloud's configured project (`gcloud config get-value project`), or None."""
    if not gcloud:
        return None
    result = subprocess.run([gcloud, "config", "get-value", "project"], capture_output=True, text=True)
    return (result.stdout.strip() or None) if result.returncode == 0 else None


def _upload_package(plan: JobPlan, work: str, log: Callable[[str], None]) -> None:
    import google.auth.exceptions
    from google.api_core import exceptions

    client = gcs.storage_client(plan.project)
    try:
        if gcs.exists(plan.package_uri, client=client):
            log(f"package {plan.package_uri} already uploaded (same sources)")
            return
        log(f"building {plan.source.archive_name}")
        archive = package.build_sdist(plan.source, work)
        log(f"uploading it to {plan.package_uri}")
        gcs.upload_file(archive, plan.package_uri, client=client)
    except (exceptions.GoogleAPICallError, google.auth.exceptions.GoogleAuthError) as error:
        message = getattr(error, "message", None) or str(error)
        raise UsageError(f"cannot upload the package to {plan.package_uri}: {message}") from None


def _staging_prefix(url: str) -> str:
    try:
        bucket, path = gcs.parse_gs_url(url)
    except UsageError as error:
        raise UsageError(f"--staging_bucket: {error}") from None
    return f"{gcs.SCHEME}{bucket}" + (f"/{path.strip('/')}" if path.strip("/") else "")


def _default_display_name(flags: dict[str, str], now: datetime.datetime | None) -> str:
    what = flags.get("preset") or flags.get("dataset") or "run"
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%d_%H%M%S")
    return f"improve_nas_{re.sub(r'[^A-Za-z0-9_.-]+', '_', what)}_{stamp}"
