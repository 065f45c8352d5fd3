"""Talking to Vertex AI: through the gcloud CLI when it is installed, else through the REST API.

gcloud is preferred because it carries the user's own login, project and proxy settings, and prints the job's
console link; the REST fallback (Application Default Credentials) serves machines without the Cloud SDK, such as CI
runners and containers. Both transports live here, with their error mapping: a failure is one UsageError line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from improve_nas.errors import UsageError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"  # covers Vertex AI and Cloud Logging
LOGGING_ENTRIES_URL = "https://logging.googleapis.com/v2/entries:list"
REGION = re.compile(r"[a-z]+(-[a-z]+)+[0-9]+")  # us-central1, europe-west4, northamerica-northeast1
PROJECT = re.compile(r"[a-z][a-z0-9.:-]{4,61}[a-z0-9]")
PROJECT_PLACEHOLDER = "PROJECT"  # what dry runs print where a project was neither given nor looked up
NAME_FORMAT = "--format=value(name)"  # makes `gcloud ai custom-jobs create` print the created job's resource name


def check_location(region: str, project: str | None) -> None:
    """Refuses a malformed --region or --project (the commands that talk to Vertex AI share this check).

    Raises:
      UsageError: naming the bad value.
    """
    if not REGION.fullmatch(region):
        raise UsageError(f"--region={region!r} is not a Google Cloud region, e.g. us-central1")
    if project is not None and not PROJECT.fullmatch(project):
        raise UsageError(f"--project={project!r} is not a Google Cloud project ID (6-30 characters: "
                         "lowercase letters, digits, hyphens)")


def gcloud_command(*, region: str, display_name: str, config_path: str, project: str | None = None,
                   gcloud: str = "gcloud", print_name: bool = False) -> list[str]:
    """`gcloud ai custom-jobs create ...` for a CustomJobSpec saved as YAML at `config_path`.

    `print_name` adds NAME_FORMAT, so that the job's resource name is the command's only output on stdout.
    """
    command = [gcloud, "ai", "custom-jobs", "create", f"--region={region}", f"--display-name={display_name}",
               f"--config={config_path}"]
    return command + ([f"--project={project}"] if project else []) + ([NAME_FORMAT] if print_name else [])


def find_gcloud() -> str | None:
    """The gcloud executable on PATH, or None."""
    return shutil.which("gcloud")


def run_gcloud(command: list[str], *, capture: bool = False) -> str:
    """Runs gcloud with stderr on the terminal (its progress, prompts and messages go to the user).

    Args:
      command: the argv, `gcloud ai custom-jobs VERB ...`.
      capture: return stdout instead of letting it through (a JSON document, a resource name).

    Returns:
      The captured stdout ("" when not captured).

    Raises:
      UsageError: gcloud exited non-zero (its own message is above on stderr).
    """
    result = subprocess.run(command, stdout=subprocess.PIPE if capture else None, text=True)
    if result.returncode:
        raise UsageError(f"gcloud {' '.join(command[1:4])} failed with exit code {result.returncode} "
                         "(its message is above)")
    return result.stdout or ""


def custom_jobs_url(*, region: str, project: str) -> str:
    return f"https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/customJobs"


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POSTs `body` as JSON; see request_json."""
    return request_json("POST", url, body=body)


def request_json(method: str, url: str, *, body: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One REST call with Application Default Credentials; the one place this package talks to Google's APIs.

    Returns:
      The response's JSON object ({} for an empty body, as cancel returns).

    Raises:
      UsageError: no credentials, no connection, or the API refused the request (its message is included).
    """
    import requests

    try:
        response = authorized_session().request(method, url, json=body, params=params, timeout=60)
    except requests.exceptions.RequestException as error:
        raise UsageError(f"cannot reach {url}: {error}") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:500]
        raise UsageError(f"Google Cloud refused {method} {url} (HTTP {response.status_code}): {message}")
    return response.json() if response.text.strip() else {}


def authorized_session():
    """A requests session that signs every request with the Application Default Credentials."""
    from google.auth.transport.requests import AuthorizedSession

    return AuthorizedSession(_credentials()[0])


def default_project() -> str:
    """The project of the Application Default Credentials.

    Raises:
      UsageError: none is configured (pass --project).
    """
    project = _credentials()[1]
    if not project:
        raise UsageError("no Google Cloud project configured; pass --project=PROJECT_ID")
    return project


def _credentials():
    import google.auth
    import google.auth.exceptions

    try:
        return google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError:
        raise UsageError("no Google Cloud credentials found: run `gcloud auth application-default login`, or set "
                         "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file") from None
