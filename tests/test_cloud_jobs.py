"""`improve-nas jobs list|describe|logs|cancel` and `submit --wait`, against a fake `gcloud` and a fake REST session.

The fake gcloud on PATH records its argv and prints canned JSON; without gcloud, `vertex.authorized_session` is
replaced by a recorder that answers like the Vertex AI and Cloud Logging APIs. Nothing leaves 127.0.0.1.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from improve_nas import cli
from improve_nas.cloud import SubmitRequest, jobs, submit, vertex
from improve_nas.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_TEST = os.path.join(ROOT, "config_test.yaml")
REGION = "us-central1"
JOB_ID = "1234567890"
JOB_NAME = f"projects/987654/locations/{REGION}/customJobs/{JOB_ID}"
RUN_DIR = "gs://b/improve_nas/runs/smoke-1"


def job(state, *, job_id=JOB_ID, display_name="smoke-1", created="2026-01-02T03:04:05Z", error=None):
    """A CustomJob resource as the API and `gcloud ... --format=json` return it."""
    resource = {"name": f"projects/987654/locations/{REGION}/customJobs/{job_id}", "displayName": display_name,
                "state": state, "createTime": created,
                "jobSpec": {"workerPoolSpecs": [{"containerSpec": {
                    "imageUri": "us-docker.pkg.dev/p/improve-nas/trainer:1",
                    "args": ["--preset=smoke", "--dataset=fake", f"--job-dir={RUN_DIR}"]}}]}}
    return resource | ({"error": error} if error else {})


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
    """A `gcloud` on PATH: records each argv, and answers from files the test writes (Fake.states, Fake.jobs).

    `describe` prints the next job of describe.json (the last one repeats), `list` prints jobs.json,
    `create --format=value(name)` prints JOB_NAME, `stream-logs` prints two log lines.
    """
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    fake = Fake(tmp_path / "gcloud-calls.jsonl", tmp_path / "gcloud-data", bin_dir / "gcloud")
    fake.data.mkdir()
    fake.states("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED")
    fake.jobs(job("JOB_STATE_SUCCEEDED"))
    fake.script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        with open({str(fake.record)!r}, "a") as log:
            log.write(json.dumps(args) + "\\n")
        verb, data = args[2], {str(fake.data)!r}
        if verb == "create" and "--format=value(name)" in args:
            print({JOB_NAME!r})
        elif verb == "list":
            print(open(data + "/jobs.json").read())
        elif verb == "describe":
            jobs = json.load(open(data + "/describe.json"))
            json.dump(jobs[1:] or jobs, open(data + "/describe.json", "w"))
            print(json.dumps(jobs[0]))
        elif verb == "stream-logs":
            print("INFO 2026-01-02 workerpool0-0 iteration 0 started")
            print("INFO 2026-01-02 workerpool0-0 done")
        """))
    fake.script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return fake


class Fake:
    def __init__(self, record, data, script):
        self.record, self.data, self.script = record, data, script

    def calls(self):
        return [json.loads(line) for line in self.record.read_text().splitlines()] if self.record.exists() else []

    def states(self, *states):
        """What successive `describe` calls report; a failed job carries an error."""
        failed = {"code": 3, "message": "trainer exited 2"}
        resources = [job(state, error=failed if state == "JOB_STATE_FAILED" else None) for state in states]
        (self.data / "describe.json").write_text(json.dumps(resources))

    def jobs(self, *resources):
        (self.data / "jobs.json").write_text(json.dumps(list(resources)))


class FakeResponse:
    def __init__(self, status_code, payload):
        self.status_code, self._payload = status_code, payload
        self.text = json.dumps(payload) if payload is not None else ""

    def json(self):
        return self._payload


class FakeApis:
    """The REST APIs a session reaches: Vertex AI custom jobs and Cloud Logging's entries:list."""

    def __init__(self, states=("JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"), log_polls=()):
        self.requests, self.states, self.log_polls = [], list(states), list(log_polls)
        self.jobs = [job("JOB_STATE_SUCCEEDED", job_id=str(n), created=f"2026-01-0{n}T00:00:00Z") for n in (1, 2, 3)]

    def request(self, method, url, json=None, params=None, timeout=None):
        self.requests.append((method, url, params, json))
        base = f"https://{REGION}-aiplatform.googleapis.com/v1/projects/"
        if url == vertex.LOGGING_ENTRIES_URL:  # each poll answers with the next canned batch (the last repeats)
            batch = self.log_polls.pop(0) if len(self.log_polls) > 1 else (self.log_polls or [[]])[0]
            return FakeResponse(200, {"entries": batch})
        if method == "POST" and url.endswith("/customJobs"):
            return FakeResponse(200, job("JOB_STATE_QUEUED") | {"displayName": json["displayName"]})
        if method == "GET" and url.endswith("/customJobs"):  # two per page, to exercise nextPageToken
            start = int((params or {}).get("pageToken", 0))
            page = {"customJobs": self.jobs[start:start + 2]}
            return FakeResponse(200, page | ({"nextPageToken": str(start + 2)} if start + 2 < len(self.jobs) else {}))
        if method == "GET" and url == base + JOB_NAME.removeprefix("projects/"):
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return FakeResponse(200, job(state))
        if method == "POST" and url.endswith(f"/customJobs/{JOB_ID}:cancel"):
            return FakeResponse(200, None)
        return FakeResponse(404, {"error": {"code": 404, "message": f"{url} not found"}})


@pytest.fixture
def no_gcloud(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcloud there (this machine has a real one: tests never run it)


@pytest.fixture
def rest(no_gcloud, monkeypatch):
    """The REST path, answered by FakeApis; credentials are never looked up."""
    apis = FakeApis()
    monkeypatch.setattr(vertex, "authorized_session", lambda: apis)
    monkeypatch.setattr(vertex, "default_project", lambda: "credentials-project")
    return apis


@pytest.fixture
def no_polling_delay(monkeypatch):
    monkeypatch.setattr(jobs, "POLL_FIRST_SECONDS", 0.0)


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def log_entry(n, timestamp):
    return {"insertId": f"id{n}", "timestamp": timestamp, "textPayload": f"line {n}\n",
            "resource": {"type": "ml_job", "labels": {"job_id": JOB_ID, "task_name": "workerpool0-0"}}}


# --- naming a job -------------------------------------------------------------------------------------------


def test_a_job_is_its_id_or_its_full_resource_name():
    assert jobs.parse_job(JOB_ID, region=REGION) == jobs.JobRef(job_id=JOB_ID, region=REGION)
    ref = jobs.parse_job(JOB_NAME, region=REGION)
    assert (ref.job_id, ref.project, ref.argument) == (JOB_ID, "987654", JOB_NAME)


@pytest.mark.parametrize("bad", ["abc", "12a", f"projects/p/locations/{REGION}/customJobs/", "customJobs/12",
                                 f"projects/p/locations/{REGION}/trainingPipelines/12", f"{JOB_NAME}/extra"])
def test_a_malformed_job_exits_2_in_one_line_and_calls_nothing(bad, fake_gcloud, capsys):
    code, out, err = run_cli(["jobs", "describe", bad, f"--region={REGION}"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert bad in err and "projects/PROJECT/locations/REGION/customJobs/ID" in err
    assert fake_gcloud.calls() == []


@pytest.mark.parametrize("argv, fragment", [
    (["jobs", "lst", f"--region={REGION}"], "did you mean list?"),
    (["jobs", "describe", JOB_NAME.replace(REGION, "europe-west4"), f"--region={REGION}"],
     "in region europe-west4, not --region=us-central1"),
    (["jobs", "cancel", f"--region={REGION}"], "improve-nas jobs cancel needs a job"),
    (["jobs", "list", JOB_ID, f"--region={REGION}"], "takes no job"),
    (["jobs", "logs", JOB_ID, f"--region={REGION}", "--limit=3"], "--filter and --limit go with improve-nas jobs list"),
    (["jobs", "list", f"--region={REGION}", "--limit=0"], "--limit=0 must be at least 1"),
    (["jobs", "list", "--region=mars"], "--region='mars' is not a Google Cloud region"),
    (["jobs", "list", f"--region={REGION}", "--project=X"], "--project='X' is not a Google Cloud project ID"),
    (["jobs", "list"], "--region"),
])
def test_bad_jobs_flags_exit_2_in_one_line(argv, fragment, fake_gcloud, capsys):
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1 and fragment in err
    assert fake_gcloud.calls() == []


# --- through gcloud -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, command", [
    (["list", "--filter=state=JOB_STATE_RUNNING", "--limit=5"],
     f"gcloud ai custom-jobs list --region={REGION} '--sort-by=~createTime' --filter=state=JOB_STATE_RUNNING "
     "--limit=5 --format=json"),
    (["describe", JOB_ID], f"gcloud ai custom-jobs describe {JOB_ID} --region={REGION} --project=my-project "
                           "--format=json"),
    (["logs", JOB_NAME], f"gcloud ai custom-jobs stream-logs {JOB_NAME} --region={REGION} --project=my-project"),
    (["cancel", JOB_ID], f"gcloud ai custom-jobs cancel {JOB_ID} --region={REGION} --project=my-project"),
])
def test_dry_run_prints_the_gcloud_command_and_runs_nothing(argv, command, fake_gcloud, capsys):
    project = [] if argv[0] == "list" else ["--project=my-project"]
    code, out, _ = run_cli(["jobs", *argv, f"--region={REGION}", *project, "--dry_run"], capsys)
    assert code == 0 and f"$ {command}\n" in out
    assert fake_gcloud.calls() == []


def test_list_through_gcloud_prints_one_line_per_job(fake_gcloud, capsys):
    fake_gcloud.jobs(job("JOB_STATE_FAILED", job_id="11", display_name="old", created="2026-01-01T00:00:00Z"),
                     job("JOB_STATE_RUNNING", job_id="22", display_name="paper-cifar10", created="2026-01-03T00:00:00Z"))
    code, out, _ = run_cli(["jobs", "list", f"--region={REGION}", "--limit=2"], capsys)
    assert code == 0
    assert out.splitlines() == ["22  paper-cifar10  JOB_STATE_RUNNING  2026-01-03T00:00:00Z",
                                "11  old            JOB_STATE_FAILED   2026-01-01T00:00:00Z"]
    [argv] = fake_gcloud.calls()
    assert argv[:3] == ["ai", "custom-jobs", "list"] and "--limit=2" in argv and "--format=json" in argv


def test_describe_through_gcloud_prints_state_error_run_directory_and_console(fake_gcloud, capsys):
    fake_gcloud.states("JOB_STATE_FAILED")
    code, out, _ = run_cli(["jobs", "describe", JOB_ID, f"--region={REGION}"], capsys)
    assert code == 0
    assert f"job:           {JOB_NAME}\n" in out and "state:         JOB_STATE_FAILED\n" in out
    assert "error:         trainer exited 2 (code 3)\n" in out and f"run directory: {RUN_DIR}\n" in out
    assert (f"console:       https://console.cloud.google.com/vertex-ai/locations/{REGION}/training/{JOB_ID}"
            "?project=987654") in out
    assert fake_gcloud.calls() == [["ai", "custom-jobs", "describe", JOB_ID, f"--region={REGION}", "--format=json"]]


def test_cancel_and_logs_through_gcloud(fake_gcloud, capfd, no_polling_delay):
    assert cli.main(["jobs", "cancel", JOB_ID, f"--region={REGION}"]) == 0
    assert "asked Vertex AI to cancel 1234567890" in capfd.readouterr().out
    assert cli.main(["jobs", "logs", JOB_ID, f"--region={REGION}"]) == 0  # RUNNING after the stream, then SUCCEEDED
    out = capfd.readouterr().out
    assert "workerpool0-0 iteration 0 started" in out  # gcloud's own stream, on the terminal
    assert out.rstrip().endswith(f"job {JOB_NAME} ended: JOB_STATE_SUCCEEDED")
    verbs = [argv[2] for argv in fake_gcloud.calls()]
    assert verbs == ["cancel", "stream-logs", "describe", "describe"]


def test_jobs_through_the_command_line_in_a_subprocess(fake_gcloud):
    result = subprocess.run([sys.executable, "-m", "improve_nas.cli", "jobs", "describe", JOB_NAME,
                             f"--region={REGION}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    assert "state:         JOB_STATE_RUNNING" in result.stdout and f"run directory: {RUN_DIR}" in result.stdout
    assert fake_gcloud.calls() == [["ai", "custom-jobs", "describe", JOB_NAME, f"--region={REGION}", "--format=json"]]
    result = subprocess.run([sys.executable, "-m", "improve_nas.cli", "jobs", "logs", "projects/p/x",
                             f"--region={REGION}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'projects/p/x'" in result.stderr


# --- through the REST API -----------------------------------------------------------------------------------


def test_dry_run_prints_the_rest_requests_and_sends_nothing(no_gcloud, monkeypatch, capsys):
    def no_session():
        raise AssertionError("a dry run sent a request")

    monkeypatch.setattr(vertex, "authorized_session", no_session)
    monkeypatch.setattr(vertex, "default_project", no_session)
    api = f"https://{REGION}-aiplatform.googleapis.com/v1/projects"
    expected = {
        "list": f"GET {api}/PROJECT/locations/{REGION}/customJobs?filter=state%3D%22JOB_STATE_RUNNING%22&pageSize=5",
        "describe": f"GET {api}/my-project/locations/{REGION}/customJobs/{JOB_ID}",
        "cancel": f"POST {api}/my-project/locations/{REGION}/customJobs/{JOB_ID}:cancel {{}}",
        "logs": f'POST {vertex.LOGGING_ENTRIES_URL} {{"resourceNames": ["projects/my-project"], "filter": '
                f'"resource.type=\\"ml_job\\" AND resource.labels.job_id=\\"{JOB_ID}\\"", "orderBy": "timestamp asc", '
                '"pageSize": 1000}',
    }
    for action, request in expected.items():
        argv = (["list", '--filter=state="JOB_STATE_RUNNING"', "--limit=5"] if action == "list"
                else [action, JOB_ID, "--project=my-project"])
        code, out, _ = run_cli(["jobs", *argv, f"--region={REGION}", "--dry_run"], capsys)
        assert code == 0 and any(line.startswith(request) for line in out.splitlines()), (action, out)


def test_list_describe_cancel_through_rest(rest, capsys):
    code, out, _ = run_cli(["jobs", "list", f"--region={REGION}"], capsys)  # 3 jobs on two pages
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["3", "2", "1"]
    assert [request[2] for request in rest.requests] == [{}, {"pageToken": "2"}]
    assert rest.requests[0][1] == vertex.custom_jobs_url(region=REGION, project="credentials-project")

    rest.requests.clear()
    code, out, _ = run_cli(["jobs", "list", f"--region={REGION}", "--limit=1"], capsys)
    assert code == 0 and len(out.splitlines()) == 1 and rest.requests[0][2] == {"pageSize": 1}

    code, out, _ = run_cli(["jobs", "describe", JOB_NAME, f"--region={REGION}"], capsys)
    assert code == 0 and "state:         JOB_STATE_RUNNING" in out and f"run directory: {RUN_DIR}" in out

    rest.requests.clear()
    code, out, _ = run_cli(["jobs", "cancel", JOB_NAME, f"--region={REGION}"], capsys)
    assert code == 0 and rest.requests == [
        ("POST", f"https://{REGION}-aiplatform.googleapis.com/v1/{JOB_NAME}:cancel", None, {})]


def test_an_api_error_is_one_line(rest, capsys):
    code, out, err = run_cli(["jobs", "describe", "42", f"--region={REGION}"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "(HTTP 404)" in err and "customJobs/42 not found" in err


def test_logs_through_rest_print_each_entry_once_until_the_job_ends(rest, capsys):
    rest.states = ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    first, second = "2026-01-02T00:00:01Z", "2026-01-02T00:00:02Z"
    rest.log_polls = [[], [log_entry(1, first), log_entry(2, second)],
                      [log_entry(2, second), log_entry(3, second)]]  # the last timestamp comes again
    sleeps = []
    code = jobs.run_jobs_command(jobs.JobsRequest(action="logs", region=REGION, job=JOB_NAME),
                                 sleep=sleeps.append)
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [f"{first} workerpool0-0 line 1", f"{second} workerpool0-0 line 2",
                                f"{second} workerpool0-0 line 3", f"job {JOB_NAME} ended: JOB_STATE_SUCCEEDED"]
    assert sleeps == [5.0, 10.0]
    filters = [body["filter"] for _, url, _, body in rest.requests if url == vertex.LOGGING_ENTRIES_URL]
    assert filters[0] == f'resource.type="ml_job" AND resource.labels.job_id="{JOB_ID}"'
    assert filters[2] == filters[0] + f' AND timestamp>="{second}"'


def test_poll_intervals_grow_to_a_cap():
    intervals = jobs._poll_intervals()
    assert [next(intervals) for _ in range(6)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


# --- submit --wait ------------------------------------------------------------------------------------------


# config_test.yaml is a container job; naming its image skips the check that the default image was pushed.
IMAGE = "us-central1-docker.pkg.dev/my-project/improve-nas/trainer:test"


def submit_wait_argv(*extra):
    return ["submit", f"--config={CONFIG_TEST}", f"--region={REGION}", "--staging_bucket=gs://b",
            "--display_name=smoke-1", f"--image={IMAGE}", "--wait", *extra, "--", "--dataset=fake"]


@pytest.mark.parametrize("final, exit_code", [("JOB_STATE_SUCCEEDED", 0), ("JOB_STATE_FAILED", 1)])
def test_submit_wait_through_gcloud_follows_the_job_and_exits_with_its_outcome(
        final, exit_code, gcs_emulator, fake_gcloud, capfd, no_polling_delay):
    fake_gcloud.states("JOB_STATE_RUNNING", final)
    assert cli.main(submit_wait_argv()) == exit_code
    out = capfd.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith(f"job {JOB_NAME} ended: {final}")
    create, stream, *describes = fake_gcloud.calls()
    assert create[:3] == ["ai", "custom-jobs", "create"] and create[-1] == "--format=value(name)"
    assert stream[2:4] == ["stream-logs", JOB_NAME]  # the name gcloud printed
    assert [argv[2] for argv in describes] == ["describe", "describe"]


def test_submit_wait_through_rest_follows_the_created_job(gcs_emulator, rest, no_polling_delay):
    rest.log_polls = [[log_entry(1, "2026-01-02T00:00:01Z")]]  # both polls see it: printed once
    lines = []
    request = SubmitRequest(config_path=CONFIG_TEST, region=REGION, staging_bucket="gs://b",
                            train_flags=("--dataset=fake",), display_name="smoke-1", project="my-project", wait=True,
                            image=IMAGE)
    submission = submit(request, log=lines.append)
    assert (submission.job_name, submission.final_state, submission.exit_code) == (JOB_NAME, "JOB_STATE_SUCCEEDED", 0)
    assert lines[-2:] == ["2026-01-02T00:00:01Z workerpool0-0 line 1", f"job {JOB_NAME} ended: JOB_STATE_SUCCEEDED"]
    assert rest.requests[0][:2] == ("POST", vertex.custom_jobs_url(region=REGION, project="my-project"))


def test_submit_wait_in_a_subprocess_exits_1_for_a_failed_job(gcs_emulator, fake_gcloud):
    fake_gcloud.states("JOB_STATE_FAILED")
    result = subprocess.run([sys.executable, "-m", "improve_nas.cli", *submit_wait_argv()], capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 1, result.stderr
    assert f"job {JOB_NAME} ended: JOB_STATE_FAILED: trainer exited 2" in result.stdout


def test_ctrl_c_while_waiting_stops_following_but_does_not_cancel(fake_gcloud, capsys):
    def interrupt(seconds):
        raise KeyboardInterrupt

    state, code = jobs.follow_until_done(JOB_NAME, region=REGION, sleep=interrupt)
    out = capsys.readouterr().out
    assert (state, code) == (None, 130)
    assert "the job keeps running" in out and f"improve-nas jobs cancel {JOB_NAME} --region={REGION}" in out
    assert f"improve-nas jobs logs {JOB_NAME} --region={REGION}" in out
    assert "cancel" not in [argv[2] for argv in fake_gcloud.calls()]


def test_submit_dry_run_with_wait_creates_and_follows_nothing(gcs_emulator, fake_gcloud, capsys):
    code, out, _ = run_cli(submit_wait_argv("--dry_run"), capsys)
    assert code == 0 and "then (--wait)" in out and "improve-nas jobs logs JOB_ID" in out
    assert fake_gcloud.calls() == []


def test_gcloud_that_prints_no_name_is_a_usage_error(gcs_emulator, fake_gcloud):
    fake_gcloud.script.write_text(fake_gcloud.script.read_text().replace(f"print({JOB_NAME!r})", "pass"))
    with pytest.raises(UsageError, match="printed no resource name"):
        submit(SubmitRequest(config_path=CONFIG_TEST, region=REGION, staging_bucket="gs://b",
                             train_flags=("--dataset=fake",), display_name="smoke-1", wait=True, image=IMAGE),
               log=lambda _: None)


def test_run_directory_follows_the_trainer_s_order():
    def spec(*args, base=None):
        pool = {"pythonPackageSpec": {"args": list(args)}}
        return {"workerPoolSpecs": [pool]} | ({"baseOutputDirectory": {"outputUriPrefix": base}} if base else {})

    assert jobs.run_directory(spec("--job-dir=gs://b/j", "--model_dir=gs://b/m")) == "gs://b/m"
    assert jobs.run_directory(spec("--job-dir", "gs://b/j")) == "gs://b/j"
    assert jobs.run_directory(spec(base="gs://b/out/")) == "gs://b/out/model"
    assert jobs.run_directory(spec("--preset=smoke")) is None
