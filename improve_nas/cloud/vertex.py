"""Creating a Vertex AI custom job: through the gcloud CLI when it is installed, else through the REST API.

gcloud is preferred because it carries the user's own login, project and proxy settings, and prints the job's
console link; the REST fallback (POST .../customJobs with Application Default Credentials) serves machines without
the Cloud SDK, such as CI runners and containers.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from improve_nas.errors import UsageError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def gcloud_command(*, region: str, display_name: str, config_path: str, project: str | None = None,
                   gcloud: str = "gcloud") -> list[str]:
    """`gcloud ai custom-jobs create ...` for a CustomJobSpec saved as YAML at `config_path`."""
    command = [gcloud, "ai", "custom-jobs", "create", f"--region={region}", f"--display-name={display_name}",
               f"--config={config_path}"]
    return command + ([f"--project={project}"] if project else [])


def find_gcloud() -> str | None:
    """The gcloud executable on PATH, or None."""
    return shutil.which("gcloud")


def run_gcloud(command: list[str]) -> None:
    """Runs gcloud with the terminal attached (its progress and the job's console link go to the user).

    Raises:
      UsageError: gcloud exited non-zero (its own message is above on stderr).
    """
    returncode = subprocess.run(command).returncode
    if returncode:
        raise UsageError(f"gcloud ai custom-jobs create failed with exit code {returncode} (its message is above)")


def custom_jobs_url(*, region: str, project: str) -> str:
    return f"https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/customJobs"


def create_custom_job(*, region: str, project: str, display_name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Creates the job through the REST API; returns the created CustomJob resource (its `name` identifies it)."""
    return post_json(custom_jobs_url(region=region, project=project), {"displayName": display_name, "jobSpec": spec})


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POSTs `body` as JSON with Application Default Credentials; the one place submit talks to the Vertex API.

    Raises:
      UsageError: no credentials, or the API refused the request (its message is included).
    """
    from google.auth.transport.requests import AuthorizedSession

    response = AuthorizedSession(_credentials()[0]).post(url, json=body, timeout=60)
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text.strip()[:500]
        raise UsageError(f"Vertex AI refused the job (HTTP {response.status_code}): {message}")
    return response.json()


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
