"""`improve-nas jobs list|describe|logs|cancel` and `submit --wait`: follow and manage Vertex AI custom jobs.

    parse_job          "1234" or projects/P/locations/R/customJobs/1234 -> JobRef
    run_jobs_command   one `improve-nas jobs` invocation -> its exit code
    follow_until_done  `submit --wait`: print the job's log until it ends -> (final state, exit code)

Each call goes through `gcloud ai custom-jobs VERB` when gcloud is on PATH (the user's login, project and proxy),
else through the REST API (vertex.request_json): GET customJobs, GET customJobs/ID, POST customJobs/ID:cancel, and
the job's log from Cloud Logging (entries:list with the filter Vertex AI documents for custom jobs). A dry run prints
those commands or requests and calls nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

from improve_nas.cloud import vertex
from improve_nas.errors import UsageError, nearest

ACTIONS = ("list", "describe", "logs", "cancel")
SUCCEEDED = "JOB_STATE_SUCCEEDED"
# The states a custom job does not leave (Vertex AI's JobState); PAUSED and CANCELLING are not among them.
ENDED_STATES = frozenset({SUCCEEDED, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                          "JOB_STATE_PARTIALLY_SUCCEEDED"})
EXIT_SUCCEEDED, EXIT_ENDED_OTHERWISE, EXIT_INTERRUPTED = 0, 1, 130  # submit --wait (README, "Following jobs")
POLL_FIRST_SECONDS, POLL_CAP_SECONDS = 5.0, 30.0
_JOB_ID = re.compile(r"[0-9]+")
_JOB_NAME = re.compile(r"projects/([a-z0-9][a-z0-9.:-]*)/locations/([a-z0-9-]+)/customJobs/([0-9]+)")
_JOB_FORMS = "its numeric ID or projects/PROJECT/locations/REGION/customJobs/ID"

Log = Callable[[str], None]
Sleep = Callable[[float], None]


@dataclasses.dataclass(frozen=True)
class JobRef:
    """One custom job: its ID, region and, when the resource name gave it, project (a project ID or number)."""

    job_id: str
    region: str
    project: str | None = None

    def name(self, project: str | None = None) -> str:
        return f"projects/{self.project or project}/locations/{self.region}/customJobs/{self.job_id}"

    @property
    def argument(self) -> str:
        """How a command line names the job: the full name when the project is known, else the ID."""
        return self.name() if self.project else self.job_id


@dataclasses.dataclass(frozen=True)
class JobsRequest:
    """What `improve-nas jobs` was asked to do.

    Attributes:
      action: list, describe, logs or cancel.
      region: the jobs' Vertex AI region.
      job: describe/logs/cancel: the numeric job ID or its full resource name.
      project: Google Cloud project (default: gcloud's, or the credentials').
      filter: list: a filter, passed to gcloud's --filter or the API's `filter` parameter.
      limit: list: at most this many jobs.
      dry_run: print the gcloud command or REST request; call nothing.
    """

    action: str
    region: str
    job: str | None = None
    project: str | None = None
    filter: str | None = None
    limit: int | None = None
    dry_run: bool = False


def parse_job(text: str, *, region: str) -> JobRef:
    """The job `text` names: a numeric ID (in `region`), or a full resource name whose region must be `region`.

    Raises:
      UsageError: neither form, or a resource name of another region.
    """
    if _JOB_ID.fullmatch(text):
        return JobRef(job_id=text, region=region)
    match = _JOB_NAME.fullmatch(text)
    if not match:
        raise UsageError(f"job {text!r} is not a custom job: give {_JOB_FORMS}")
    project, job_region, job_id = match.groups()
    if job_region != region:
        raise UsageError(f"job {text!r} is in region {job_region}, not --region={region}")
    return JobRef(job_id=job_id, region=region, project=project)


def run_jobs_command(request: JobsRequest, *, log: Log = print, sleep: Sleep = time.sleep) -> int:
    """Runs one `improve-nas jobs` command; returns its exit code (logs: 130 when stopped by Ctrl-C, else 0).

    Raises:
      UsageError: bad input (nothing was called), or gcloud / the API refused the call.
    """
    action, ref = _check(request)
    backend = _backend(request.region, request.project, ref=ref, dry_run=request.dry_run)
    if request.dry_run:
        log(f"# improve-nas jobs {action} --dry_run: nothing was called. A real run would:")
        for line in backend.plan(action, ref, filter_=request.filter, limit=request.limit):
            log(line)
        return 0
    if action == "list":
        jobs = backend.list_jobs(filter_=request.filter, limit=request.limit)
        for line in format_job_lines(jobs) or [f"no custom jobs in {request.region}"
                                                + (f" match --filter={request.filter}" if request.filter else "")]:
            log(line)
        return 0
    if action == "describe":
        log(describe_job(backend.describe(ref), region=request.region))
        return 0
    if action == "cancel":
        backend.cancel(ref)
        log(f"asked Vertex AI to cancel {ref.argument}: it stops within minutes (billed until then); see its "
            f"state with {_self_command('describe', ref, request.project)}")
        return 0
    state = _follow(backend, ref, project=request.project, log=log, sleep=sleep)
    return EXIT_INTERRUPTED if state is None else 0


def follow_until_done(job_name: str, *, region: str, project: str | None = None, log: Log = print,
                      sleep: Sleep = time.sleep) -> tuple[str | None, int]:
    """`submit --wait`: prints the created job's log until the job ends (Ctrl-C stops following, not the job).

    Returns:
      (the final state, or None when interrupted; the exit code: 0 succeeded, 1 ended otherwise, 130 Ctrl-C).
    """
    ref = parse_job(job_name, region=region)
    state = _follow(_backend(region, project, ref=ref, dry_run=False), ref, project=project, log=log, sleep=sleep)
    if state is None:
        return None, EXIT_INTERRUPTED
    return state, EXIT_SUCCEEDED if state == SUCCEEDED else EXIT_ENDED_OTHERWISE


def format_job_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """One line per job, newest first: ID, display name, state, create time."""
    rows = [(job.get("name", "").rsplit("/", 1)[-1], job.get("displayName", ""), job.get("state", ""),
             job.get("createTime", "")) for job in sorted(jobs, key=lambda job: job.get("createTime", ""),
                                                          reverse=True)]
    widths = [max((len(row[column]) for row in rows), default=0) for column in range(3)]
    return [f"{job_id:<{widths[0]}}  {name:<{widths[1]}}  {state:<{widths[2]}}  {created}".rstrip()
            for job_id, name, state, created in rows]


def describe_job(job: dict[str, Any], *, region: str) -> str:
    """The job's state, error, times, run directory and console link, one per line."""
    ref = parse_job(job.get("name", ""), region=region)
    error = job.get("error") or {}
    fields = [("job", ref.name()), ("display name", job.get("displayName", "")), ("state", job.get("state", "")),
              ("error", f"{error.get('message', '')} (code {error.get('code', '?')})" if error else ""),
              ("created", job.get("createTime", "")), ("started", job.get("startTime", "")),
              ("ended", job.get("endTime", "")), ("run directory", run_directory(job.get("jobSpec") or {}) or ""),
              ("console", console_url(ref))]
    return "\n".join(f"{label + ':':<15}{value}" for label, value in fields if value)


def run_directory(spec: dict[str, Any]) -> str | None:
    """Where the trainer of this CustomJobSpec writes: --model_dir, else --job-dir, else <baseOutputDirectory>/model
    (the order of trainer.resolve_model_dir); None for a job whose args name none."""
    pools = spec.get("workerPoolSpecs") or [{}]
    code = pools[0].get("containerSpec") or pools[0].get("pythonPackageSpec") or {}
    flags = _flag_values(code.get("args") or [])
    found = flags.get("model_dir") or flags.get("job-dir") or flags.get("job_dir")
    if found:
        return found
    prefix = (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix")
    return prefix.rstrip("/") + "/model" if prefix else None


def console_url(ref: JobRef) -> str:
    return (f"https://console.cloud.google.com/vertex-ai/locations/{ref.region}/training/{ref.job_id}"
            f"?project={ref.project}")


# --- following a job ----------------------------------------------------------------------------------------


def _follow(backend, ref: JobRef, *, project: str | None, log: Log, sleep: Sleep) -> str | None:
    """Prints the job's log until it ends, then its final state; returns that state (None: Ctrl-C)."""
    try:
        try:
            job = backend.follow_logs(ref, log=log, sleep=sleep)
        except UsageError as error:  # e.g. no permission to read logs: the job's end is still worth waiting for
            log(f"cannot follow the job's log ({error}); waiting for the job to end")
            job = None
        intervals = _poll_intervals()
        while job is None or job.get("state") not in ENDED_STATES:
            if job is not None:
                sleep(next(intervals))
            job = backend.describe(ref)
    except KeyboardInterrupt:
        log(f"\nstopped following {ref.argument}; the job keeps running (and billing). Follow it again: "
            f"{_self_command('logs', ref, project)}; cancel it: {_self_command('cancel', ref, project)}")
        return None
    error = (job.get("error") or {}).get("message")
    log(f"job {job.get('name', ref.argument)} ended: {job['state']}" + (f": {error}" if error else ""))
    return job["state"]


def _poll_intervals() -> Iterator[float]:
    """5, 10, 20, 30, 30, ... seconds: quick news of a short job, few calls for a long one."""
    seconds = POLL_FIRST_SECONDS
    while True:
        yield seconds
        seconds = min(2 * seconds, POLL_CAP_SECONDS)


def _self_command(action: str, ref: JobRef, project: str | None) -> str:
    return shlex.join(["improve-nas", "jobs", action, ref.argument, f"--region={ref.region}"]
                      + ([f"--project={project}"] if project and not ref.project else []))


# --- the two ways to reach Vertex AI ------------------------------------------------------------------------


class _GcloudJobs:
    """`gcloud ai custom-jobs VERB`; output parsed from --format=json, logs streamed by gcloud itself."""

    def __init__(self, gcloud: str, region: str, project: str | None):
        self.gcloud, self.region, self.project = gcloud, region, project

    def plan(self, action: str, ref: JobRef | None, *, filter_: str | None, limit: int | None) -> list[str]:
        command = self._list_command(filter_, limit) if action == "list" else self._command(action, ref)
        return [f"$ {shlex.join(['gcloud', *command[1:]])}"]

    def list_jobs(self, *, filter_: str | None, limit: int | None) -> list[dict[str, Any]]:
        return self._json(self._list_command(filter_, limit))

    def describe(self, ref: JobRef) -> dict[str, Any]:
        return self._json(self._command("describe", ref))

    def cancel(self, ref: JobRef) -> None:
        vertex.run_gcloud(self._command("cancel", ref))

    def follow_logs(self, ref: JobRef, *, log: Log, sleep: Sleep) -> None:
        vertex.run_gcloud(self._command("logs", ref))  # returns once the job has ended

    def _list_command(self, filter_: str | None, limit: int | None) -> list[str]:
        extra = [f"--filter={filter_}"] * bool(filter_) + [f"--limit={limit}"] * bool(limit)
        return self._base("list") + ["--sort-by=~createTime", *extra, "--format=json"]

    def _command(self, action: str, ref: JobRef) -> list[str]:
        verb = {"logs": "stream-logs"}.get(action, action)
        return self._base(verb, ref.argument) + (["--format=json"] if action == "describe" else [])

    def _base(self, verb: str, *args: str) -> list[str]:
        project = [f"--project={self.project}"] if self.project else []
        return [self.gcloud, "ai", "custom-jobs", verb, *args, f"--region={self.region}", *project]

    @staticmethod
    def _json(command: list[str]) -> Any:
        output = vertex.run_gcloud(command, capture=True)
        try:
            return json.loads(output)
        except ValueError:
            raise UsageError(f"gcloud {' '.join(command[1:4])} printed no JSON: {output.strip()[:200]!r}") from None


@dataclasses.dataclass(frozen=True)
class RestCall:
    """One request of the REST path, printable for a dry run."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{self.method} {self.url}{query}" + (f" {json.dumps(self.body)}" if self.body is not None else "")

    def send(self) -> dict[str, Any]:
        return vertex.request_json(self.method, self.url, body=self.body, params=self.params)


class _RestJobs:
    """The Vertex AI REST API and Cloud Logging's entries:list, with Application Default Credentials."""

    PAGE_SIZE = 1000  # log entries per entries:list call (the API's maximum)

    def __init__(self, region: str, project: str):
        self.region, self.project = region, project

    def plan(self, action: str, ref: JobRef | None, *, filter_: str | None, limit: int | None) -> list[str]:
        if action == "list":
            return [f"{self._list_call(filter_, limit, None)}   (then one per nextPageToken)"]
        if action == "cancel":
            return [str(self._cancel_call(ref))]
        if action == "describe":
            return [str(self._describe_call(ref))]
        return [f"{self._describe_call(ref)}   (the job's state)", f"{self._logs_call(ref, None, None)}",
                f"   (both again every {POLL_FIRST_SECONDS:g}-{POLL_CAP_SECONDS:g} s, for entries newer than the "
                "last printed, until the job has ended)"]

    def list_jobs(self, *, filter_: str | None, limit: int | None) -> list[dict[str, Any]]:
        jobs, token = [], None
        while limit is None or len(jobs) < limit:
            page = self._list_call(filter_, limit and limit - len(jobs), token).send()
            jobs += page.get("customJobs", [])
            token = page.get("nextPageToken")
            if not token:
                break
        return jobs[:limit] if limit else jobs

    def describe(self, ref: JobRef) -> dict[str, Any]:
        return self._describe_call(ref).send()

    def cancel(self, ref: JobRef) -> None:
        self._cancel_call(ref).send()

    def follow_logs(self, ref: JobRef, *, log: Log, sleep: Sleep) -> dict[str, Any]:
        """Prints new log entries every few seconds; returns the job once it has ended."""
        after, seen, intervals = None, set(), _poll_intervals()
        while True:
            job = self.describe(ref)  # before the entries: once it has ended, they are complete
            entries = self._entries(ref, after)
            new = [entry for entry in entries if entry.get("insertId") not in seen]
            for entry in new:
                log(format_log_entry(entry))
            if new:  # the next query starts at the newest timestamp; what was printed there is skipped
                after = entries[-1].get("timestamp")
                seen = {entry.get("insertId") for entry in entries if entry.get("timestamp") == after}
            if job.get("state") in ENDED_STATES:
                return job
            sleep(next(intervals))

    def _entries(self, ref: JobRef, after: str | None) -> list[dict[str, Any]]:
        entries, token = [], None
        while True:
            page = self._logs_call(ref, after, token).send()
            entries += page.get("entries", [])
            token = page.get("nextPageToken")
            if not token:
                return entries

    def _list_call(self, filter_: str | None, page_size: int | None, token: str | None) -> RestCall:
        params = {"filter": filter_, "pageSize": page_size, "pageToken": token}
        return RestCall("GET", vertex.custom_jobs_url(region=self.region, project=self.project),
                        params={key: value for key, value in params.items() if value})

    def _describe_call(self, ref: JobRef) -> RestCall:
        return RestCall("GET", self._job_url(ref))

    def _cancel_call(self, ref: JobRef) -> RestCall:
        return RestCall("POST", f"{self._job_url(ref)}:cancel", body={})

    def _logs_call(self, ref: JobRef, after: str | None, token: str | None) -> RestCall:
        query = f'resource.type="ml_job" AND resource.labels.job_id="{ref.job_id}"'
        body = {"resourceNames": [f"projects/{ref.project or self.project}"],
                "filter": query + (f' AND timestamp>="{after}"' if after else ""),
                "orderBy": "timestamp asc", "pageSize": self.PAGE_SIZE}
        return RestCall("POST", vertex.LOGGING_ENTRIES_URL, body=body | ({"pageToken": token} if token else {}))

    def _job_url(self, ref: JobRef) -> str:
        return f"https://{self.region}-aiplatform.googleapis.com/v1/{ref.name(self.project)}"


def format_log_entry(entry: dict[str, Any]) -> str:
    """TIMESTAMP TASK TEXT, as gcloud's stream-logs shows a line (TASK: workerpool0-0, the chief)."""
    payload = entry.get("jsonPayload")
    text = entry.get("textPayload")
    if text is None:
        text = payload.get("message", json.dumps(payload)) if payload else ""
    task = ((entry.get("resource") or {}).get("labels") or {}).get("task_name", "")
    return " ".join(part for part in (entry.get("timestamp", ""), task, text.rstrip("\n")) if part)


# --- checks -------------------------------------------------------------------------------------------------


def _check(request: JobsRequest) -> tuple[str, JobRef | None]:
    """The action and the job, once every flag is known good."""
    action = request.action
    if action not in ACTIONS:
        raise UsageError(f"unknown jobs command {action!r}; {nearest(action, ACTIONS)}choose one of: "
                         f"{', '.join(ACTIONS)}")
    vertex.check_location(request.region, request.project)
    if action == "list":
        if request.job is not None:
            raise UsageError(f"improve-nas jobs list takes no job (got {request.job!r}); use --filter to narrow it")
        if request.limit is not None and request.limit < 1:
            raise UsageError(f"--limit={request.limit} must be at least 1")
        return action, None
    if request.filter is not None or request.limit is not None:
        raise UsageError(f"--filter and --limit go with improve-nas jobs list, not {action}")
    if request.job is None:
        raise UsageError(f"improve-nas jobs {action} needs a job: {_JOB_FORMS}")
    return action, parse_job(request.job, region=request.region)


def _backend(region: str, project: str | None, *, ref: JobRef | None, dry_run: bool):
    """gcloud when it is on PATH, else the REST API for the project given, named by the job, or the credentials'."""
    gcloud = vertex.find_gcloud()
    if gcloud:
        return _GcloudJobs(gcloud, region, project)
    project = project or (ref.project if ref else None)
    return _RestJobs(region, project or (vertex.PROJECT_PLACEHOLDER if dry_run else vertex.default_project()))


def _flag_values(args: list[str]) -> dict[str, str]:
    """--name=value and --name value pairs of an args list (other arguments ignored)."""
    values = {}
    for index, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, equals, value = arg[2:].partition("=")
        if not equals and index + 1 < len(args) and not args[index + 1].startswith("--"):
            value = args[index + 1]
        values[name] = value
    return values
