"""The training image of container jobs, and the prebuilt images of Python-package jobs.

Container jobs run the image built from `improve_nas/cloud/Dockerfile` (the Python, TensorFlow and Keras versions the
test suite runs on), named after the sources it holds:
`<region>-docker.pkg.dev/<project>/improve-nas/trainer:<version>-<source digest>` (`trainer-jax` for the JAX
variant), so the same sources map to the same image and a re-submit needs no rebuild. The Dockerfile ships inside
the package, so `--build_image` works from an installed wheel as well as from a checkout: the build context is a
staged copy of the sources with the Dockerfile at its root.

Python-package jobs run on one of Vertex AI's prebuilt training images; `PREBUILT_IMAGES` records when each known one
stops being available, so a spec that names a retired or unknown one gets a warning (never a refusal: the table ages).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
import subprocess
from typing import Callable

from improve_nas.cloud import package
from improve_nas.cloud.package import SourceTree
from improve_nas.errors import UsageError, nearest

DOCKERFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Dockerfile")
REPOSITORY = "improve-nas"  # the Artifact Registry repository (docker format) in the job's region
IMAGE_NAMES = {"tensorflow": "trainer", "jax": "trainer-jax"}  # Keras backend -> image name
BACKENDS = tuple(IMAGE_NAMES)
_ARG = re.compile(r"^ARG ([A-Z_]+)=(.*)$", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An image in Artifact Registry: `<location>-docker.pkg.dev/<project>/<repository>/<name>:<tag>`."""

    location: str
    project: str
    repository: str
    name: str
    tag: str

    @property
    def uri(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}/{self.name}:{self.tag}"


def default_image(*, region: str, project: str, source: SourceTree, backend: str = "tensorflow") -> ImageRef:
    """The image this repository's Dockerfile builds from `source`, in the job's region and project."""
    return ImageRef(location=region, project=project, repository=REPOSITORY, name=IMAGE_NAMES[backend],
                    tag=f"{source.version}-{source.digest}")


# --- building -----------------------------------------------------------------------------------------------


def dockerfile_args(text: str) -> dict[str, str]:
    """The `ARG NAME=default` lines of a Dockerfile, name -> default."""
    return {name: value.strip() for name, value in _ARG.findall(text)}


def stage_build_context(tree: SourceTree, directory: str, *, image_uri: str, backend: str) -> str:
    """Writes the build context of `image_uri` into `directory`: the sources and the Dockerfile; returns it.

    The staged Dockerfile's IMAGE and BACKEND defaults are set here, because `gcloud builds submit --tag` passes no
    build arguments.

    Raises:
      UsageError: this installation of improve_nas has no Dockerfile.
    """
    if not os.path.isfile(DOCKERFILE):
        raise UsageError(f"this installation of improve_nas has no {DOCKERFILE}; install improve_nas from the "
                         "repository, or pass --image=URI of an image you built")
    package.stage_source(tree, directory)
    with open(DOCKERFILE, encoding="utf-8") as handle:
        text = handle.read()
    defaults = {"IMAGE": image_uri, "BACKEND": backend}
    text = _ARG.sub(lambda match: f"ARG {match[1]}={defaults.get(match[1], match[2])}", text)
    with open(os.path.join(directory, "Dockerfile"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return directory


def build_commands(image_uri: str, context: str, *, project: str | None = None,
                   which: Callable[[str], str | None] = shutil.which) -> list[list[str]]:
    """The commands that build `context` and push it as `image_uri`: Cloud Build when gcloud is installed (nothing
    is built locally), else docker build + docker push.

    Raises:
      UsageError: neither gcloud nor docker is on PATH.
    """
    gcloud, docker = which("gcloud"), which("docker")
    if gcloud:
        return [[gcloud, "builds", "submit", f"--tag={image_uri}"] + ([f"--project={project}"] if project else [])
                + [context]]
    if docker:
        return [[docker, "build", "-t", image_uri, context], [docker, "push", image_uri]]
    raise UsageError("--build_image needs gcloud (Cloud Build) or docker on PATH, and neither is installed; "
                     "install one, or build the image elsewhere and pass --image=URI")


def run_build(commands: list[list[str]], log: Callable[[str], None]) -> None:
    """Runs the build and push commands with the terminal attached (their progress goes to the user).

    Raises:
      UsageError: a command failed.
    """
    import shlex

    for command in commands:
        log(f"$ {shlex.join(command)}")
        returncode = subprocess.run(command).returncode
        if returncode:
            raise UsageError(f"{os.path.basename(command[0])} {command[1]} failed with exit code {returncode} (its "
                             f"message is above); the Artifact Registry repository must exist: gcloud artifacts "
                             f"repositories create {REPOSITORY} --repository-format=docker --location=REGION")


# --- does the image exist? ------------------------------------------------------------------------------------


def describe_command(image: ImageRef, gcloud: str = "gcloud") -> list[str]:
    return [gcloud, "artifacts", "docker", "images", "describe", image.uri, "--quiet"]


def image_exists(image: ImageRef, *, gcloud: str | None) -> bool:
    """Whether Artifact Registry holds `image`: asked through gcloud when installed, else through the REST API."""
    if gcloud:
        return subprocess.run(describe_command(image, gcloud), capture_output=True).returncode == 0
    from improve_nas.cloud import vertex

    url = (f"https://artifactregistry.googleapis.com/v1/projects/{image.project}/locations/{image.location}/"
           f"repositories/{image.repository}/packages/{image.name}/tags/{image.tag}")
    response = vertex.authorized_session().get(url, timeout=60)
    if response.status_code == 404:
        return False
    if response.status_code >= 400:
        raise UsageError(f"cannot check that {image.uri} exists (HTTP {response.status_code}): "
                         f"{response.text.strip()[:300]}")
    return True


# --- Vertex AI's prebuilt training images -------------------------------------------------------------------

PREBUILT_PREFIX = re.compile(r"(us|europe|asia)-docker\.pkg\.dev/vertex-ai/training/([^:@/]+)")
# Read on 2026-12-02 from the stored copy of https://cloud.google.com/vertex-ai/docs/supported-frameworks-list
# ("Supported frameworks for custom training"; that copy lists TensorFlow up to 2.14), except tf-gpu.2-17.py310,
# whose date is the one issue 17 quotes from the current English table. Names are the image names under
# {us,europe,asia}-docker.pkg.dev/vertex-ai/training/, each with its end-of-availability date.
MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python (tests/test_cloud.py checks they agree)
PREBUILT_IMAGES = {
    "tf-cpu.2-12.py310": datetime.date(2025, 6, 30),
    "tf-gpu.2-12.py310": datetime.date(2025, 6, 30),
    "tf-cpu.2-13.py310": datetime.date(2025, 7, 5),
    "tf-gpu.2-13.py310": datetime.date(2025, 7, 5),
    "tf-cpu.2-14.py310": datetime.date(2025, 9, 26),
    "tf-gpu.2-14.py310": datetime.date(2025, 9, 26),
    "tf-gpu.2-17.py310": datetime.date(2026, 7, 11),
}
PREBUILT_TABLE_SOURCE = "https://cloud.google.com/vertex-ai/docs/supported-frameworks-list (read 2026-12-02)"


def prebuilt_image_warnings(uri: str, today: datetime.date | None = None) -> list[str]:
    """Warnings about a Vertex AI prebuilt training image: past its end of availability or not in the table, and a
    Python older than improve_nas needs."""
    match = PREBUILT_PREFIX.match(uri)
    if not match:
        return []
    name, today = match.group(2), today or datetime.date.today()
    warnings = []
    if name not in PREBUILT_IMAGES:
        warnings.append(f"{uri} is not a Vertex AI prebuilt training image this version knows; "
                        f"{nearest(name, PREBUILT_IMAGES) or 'known: ' + ', '.join(PREBUILT_IMAGES) + '. '}"
                        f"(table: {PREBUILT_TABLE_SOURCE})")
    elif PREBUILT_IMAGES[name] < today:
        warnings.append(f"{name} reached its end of availability on {PREBUILT_IMAGES[name].isoformat()} (Vertex AI "
                        "may no longer pull it); use a container job (containerSpec, the image of this repository's "
                        f"Dockerfile) (table: {PREBUILT_TABLE_SOURCE})")
    python = re.search(r"\.py(\d)(\d+)$", name)
    if python and (int(python.group(1)), int(python.group(2))) < MIN_PYTHON:
        warnings.append(f"{name} runs Python {python.group(1)}.{python.group(2)}, and improve_nas needs Python "
                        f"{'.'.join(map(str, MIN_PYTHON))} or newer, so pip will not install it there; use a "
                        "container job (containerSpec, the image of this repository's Dockerfile)")
    return warnings
