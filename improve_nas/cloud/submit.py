"""`improve-nas submit`: check everything locally, then package, upload and create the Vertex AI custom job.

    plan_job      spec file + train flags -> the resolved CustomJobSpec (no writes, no network)
    submit        plan, then build the sdist, upload it to the staging bucket, create the job (gcloud or REST),
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
import tempfile
from typing import Any, Callable

from improve_nas.cloud import jobs, package, train_flags, vertex
from improve_nas.cloud.spec import load_job_spec
from improve_nas.config import Config
from improve_nas.errors import UsageError
from improve_nas.storage import gcs

_REGION = re.compile(r"[a-z]+(-[a-z]+)+[0-9]+")  # us-central1, europe-west4, northamerica-northeast1
_PROJECT = re.compile(r"[a-z][a-z0-9.:-]{4,61}[a-z0-9]")
_DISPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # also a path segment of the run directory
CONFIG_FILE_NAME = "job.yaml"


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
      dry_run: print the resolved spec and command; build, upload and create nothing.
      wait: once created, print the job's log until it ends (jobs.follow_until_done).
    """

    config_path: str
    region: str
    staging_bucket: str
    train_flags: tuple[str, ...] = ()
    display_name: str | None = None
    project: str | None = None
    dry_run: bool = False
    wait: bool = False


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """A checked, fully resolved job.

    Attributes:
      display_name: the job's name.
      region: its region.
      project: the project given on the command line, if any.
      spec: the CustomJobSpec to create: packageUris filled in, args merged.
      package_uri: where the package is (or will be) uploaded.
      run_dir: the run directory on gs:// the trainer will use.
      source: the source files packaged.
      config: the training configuration the trainer will resolve from the args.
    """

    display_name: str
    region: str
    project: str | None
    spec: dict[str, Any]
    package_uri: str
    run_dir: str
    source: package.SourceTree
    config: Config

    def gcloud_command(self, config_path: str, gcloud: str = "gcloud", print_name: bool = False) -> list[str]:
        return vertex.gcloud_command(region=self.region, display_name=self.display_name, config_path=config_path,
                                     project=self.project, gcloud=gcloud, print_name=print_name)

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
    if not _REGION.fullmatch(request.region):
        raise UsageError(f"--region={request.region!r} is not a Google Cloud region, e.g. us-central1")
    if request.project is not None and not _PROJECT.fullmatch(request.project):
        raise UsageError(f"--project={request.project!r} is not a Google Cloud project ID (6-30 characters: "
                         "lowercase letters, digits, hyphens)")
    spec = load_job_spec(request.config_path)
    pool = spec["workerPoolSpecs"][0]["pythonPackageSpec"]
    flags = train_flags.merge_train_flags(
        train_flags.parse_train_flags(pool.get("args") or [], origin=f"{request.config_path} args"),
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
    package_uri = f"{staging}/improve_nas/packages/{source.archive_name}"
    resolved = copy.deepcopy(spec)
    for pool in resolved["workerPoolSpecs"]:  # the workers run exactly what the chief runs
        pool["pythonPackageSpec"]["packageUris"] = [package_uri]
        pool["pythonPackageSpec"]["args"] = train_flags.format_train_flags(flags)
    return JobPlan(display_name=display_name, region=request.region, project=request.project, spec=resolved,
                   package_uri=package_uri, run_dir=run_dir, source=source, config=config)


def submit(request: SubmitRequest, *, source_root: str | None = None,
           log: Callable[[str], None] = print) -> Submission:
    """Plans the job; unless `request.dry_run`, builds and uploads the package and creates the job.

    Args:
      request: the command line.
      source_root: the checkout to package (default: the one this module was imported from).
      log: where progress lines go (stdout by default).

    Returns:
      What was done.

    Raises:
      UsageError: bad input, an unreachable bucket, or a refused job.
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
    with tempfile.TemporaryDirectory(prefix="improve_nas-submit-") as work:
        _upload_package(plan, work, log)
        if gcloud:
            config_path = os.path.join(work, CONFIG_FILE_NAME)
            with open(config_path, "w", encoding="utf-8") as handle:
                handle.write(plan.spec_yaml())
            command = plan.gcloud_command(config_path, gcloud=gcloud, print_name=request.wait)
            log(f"$ {shlex.join(command)}")
            printed = vertex.run_gcloud(command, capture=request.wait).split()
            submission = Submission(plan, created_with="gcloud", job_name=printed[-1] if printed else None)
    if not gcloud:
        job = vertex.create_custom_job(region=plan.region, project=project, display_name=plan.display_name,
                                       spec=plan.spec)
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
        "# improve-nas submit --dry_run: nothing was built, uploaded or created.",
        f"# Resolved Vertex AI CustomJobSpec ({CONFIG_FILE_NAME}) of job {plan.display_name!r}:",
        plan.spec_yaml().rstrip("\n"),
        "# A real submit would:",
        f"#   1. build the sdist of {plan.source.root} and upload it to {plan.package_uri}",
        f"#   2. run: {shlex.join(plan.gcloud_command(CONFIG_FILE_NAME))}",
        "#      (without gcloud on PATH: POST "
        f"{vertex.custom_jobs_url(region=plan.region, project=plan.project or 'PROJECT')})",
        f"# Run directory: {plan.run_dir}",
    ]
    return "\n".join(lines)


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
