"""Where a run directory lives: a local path, or a gs:// URL trained in a local working copy.

Training reads and writes plain files (Keras saving, numpy checkpoints, TensorBoard event files), so a run whose
model_dir is on gs:// works in a local copy that `gcs.DirectoryMirror` keeps in step with the bucket:

    location = open_location("gs://bucket/run")   # checks the URL and that the bucket can be listed; writes nothing
    location.read_text("config.json")              # the bucket's copy, for checks before anything is written
    location.pull()                                 # working copy := bucket (what an earlier attempt pushed)
    ...                                             # train in location.local_dir; push() after every write
    location.push()

The working copy is `$TMPDIR/improve_nas/<hash of the URL>`: a cache the bucket can always rebuild, so it may be
deleted between runs. The bucket is the truth: `pull` also drops local files the bucket does not hold, so a stale
copy (another run once stored under the same URL, or writes a crash never uploaded) is never resumed.

In a multi-worker run only the chief writes the run directory; every other worker trains in a `WorkerCopy`: a
private scratch directory that starts as a copy of the chief's state (so a rerun resumes where the chief stopped) and
is never written back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from improve_nas.errors import UsageError
from improve_nas.storage import gcs

WORK_ROOT = "improve_nas"  # under the system temporary directory ($TMPDIR)


class LocalLocation:
    """A run directory on the local file system: the working copy is the directory itself."""

    def __init__(self, path: str):
        _check_writable_directory(path)
        self.url = path
        self.local_dir = path

    def read_text(self, name: str) -> str | None:
        """The content of file `name` of the run directory, None when it does not exist."""
        path = os.path.join(self.local_dir, name)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def pull(self) -> None:
        pass

    def push(self) -> None:
        pass


class GcsLocation:
    """A run directory on gs://, trained in a local working copy (see the module docstring).

    Args:
      url: `gs://BUCKET/PATH`.
      local_dir: the working copy; by default `$TMPDIR/improve_nas/<hash of the URL>`.
      client: a storage client; by default one from the environment.

    Raises:
      UsageError: an invalid URL, no credentials, a bucket that does not exist or cannot be listed.
    """

    def __init__(self, url: str, *, local_dir: str | None = None, client=None):
        gcs.parse_gs_url(url)  # raises UsageError on a bad bucket name
        self.url = url.rstrip("/")
        self.local_dir = local_dir or working_copy_dir(self.url)
        self._client = client or gcs.storage_client()
        self._mirror = gcs.DirectoryMirror(self.url, self.local_dir, client=self._client)
        _check_listable(self.url, self._client)

    def read_text(self, name: str) -> str | None:
        try:
            return gcs.read_bytes(f"{self.url}/{name}", client=self._client).decode("utf-8")
        except FileNotFoundError:
            return None

    def pull(self) -> None:
        """Makes the working copy equal to the bucket: stale local files go, missing or changed ones come down."""
        remote = {obj.url[len(self.url) + 1:] for obj in gcs.list_blobs(self.url + "/", client=self._client)}
        _remove_all_but(self.local_dir, remote)
        self._mirror.pull()

    def push(self) -> None:
        """Uploads what changed; an iteration's architecture.json after its members (the mirror orders it)."""
        self._mirror.push()


class TensorBoardCopy:
    """A second home for the run's TensorBoard event files (Vertex AI's AIP_TENSORBOARD_LOG_DIR).

    Args:
      target: gs://BUCKET/PATH or a local directory.
      source_dir: the run's (local) tensorboard directory.
      client: a storage client for a gs:// target; by default one from the environment.
    """

    def __init__(self, target: str, source_dir: str, *, client=None):
        self.target = target
        self._source = source_dir
        self._mirror = None
        if gcs.is_gs_url(target):
            gcs.parse_gs_url(target)
            self._mirror = gcs.DirectoryMirror(target, source_dir, client=client or gcs.storage_client())
        elif "://" in target:
            raise UsageError(f"AIP_TENSORBOARD_LOG_DIR={target!r}: unsupported scheme; use gs://BUCKET/PATH or a "
                             "local directory")

    def push(self) -> None:
        if self._mirror is not None:
            self._mirror.push()
        elif os.path.isdir(self._source):
            shutil.copytree(self._source, self.target, dirs_exist_ok=True)


class WorkerCopy:
    """A non-chief worker's run directory: a scratch copy of `location`'s, read from it, never written back.

    `pull` copies what resuming needs (finished iterations, checkpoints); the worker writes its own config.json and
    the rest. It must pull before its first collective operation: from then on the chief, which cannot pass a step
    without it, may change those files. `close` deletes the scratch directory.
    """

    RESUME_STATE = ("iterations", "checkpoints")

    def __init__(self, location: LocalLocation | GcsLocation):
        self.url = location.url
        self.local_dir = tempfile.mkdtemp(prefix="improve_nas-worker-")
        self._location = location

    def read_text(self, name: str) -> str | None:
        return self._location.read_text(name)

    def pull(self) -> None:
        _remove_all_but(self.local_dir, set())
        if isinstance(self._location, GcsLocation):
            GcsLocation(self.url, local_dir=self.local_dir, client=self._location._client).pull()
            return
        for name in self.RESUME_STATE:
            source = os.path.join(self._location.local_dir, name)
            if os.path.isdir(source):  # temporary and staging names are the chief's writes in flight
                shutil.copytree(source, os.path.join(self.local_dir, name),
                                ignore=shutil.ignore_patterns(".tmp-*", ".staging-*"))

    def push(self) -> None:
        pass

    def close(self) -> None:
        shutil.rmtree(self.local_dir, ignore_errors=True)


def open_location(model_dir: str) -> LocalLocation | GcsLocation:
    """The location of `model_dir`: a local path, or gs://BUCKET/PATH.

    Raises:
      UsageError: another scheme, or a gs:// location that cannot be used (see `GcsLocation`).
    """
    if gcs.is_gs_url(model_dir):
        return GcsLocation(model_dir)
    if "://" in model_dir:
        raise UsageError(f"model_dir {model_dir!r}: unsupported scheme {model_dir.split('://')[0]!r}; use a local "
                         "path or gs://BUCKET/PATH")
    return LocalLocation(model_dir)


def _check_writable_directory(path: str) -> None:
    """Fails early (before anything is written) when `path` names a file or cannot be created or written."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"model_dir {path!r} is a file, not a directory; choose another --model_dir")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"model_dir {path!r} cannot be created: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == os.path.abspath(path) else f"cannot be created in {existing!r}"
        raise UsageError(f"model_dir {path!r} {what}: permission denied; choose another --model_dir or fix its "
                         "permissions")


def working_copy_dir(url: str) -> str:
    """`$TMPDIR/improve_nas/<hash>`: one working copy per URL, the same in every attempt on this machine."""
    digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), WORK_ROOT, digest)


def _check_listable(url: str, client) -> None:
    """Fails early (before anything is written) on a missing bucket or missing permissions."""
    from google.api_core import exceptions

    bucket, prefix = gcs.parse_gs_url(url)
    try:
        next(iter(client.list_blobs(bucket, prefix=prefix, max_results=1)), None)
    except exceptions.NotFound:
        raise UsageError(f"model_dir {url!r}: bucket {bucket!r} does not exist (create it with `gcloud storage "
                         f"buckets create gs://{bucket}`)") from None
    except exceptions.Forbidden:
        raise UsageError(f"model_dir {url!r}: no permission to list bucket {bucket!r} (the run needs "
                         "storage.objects.list, get, create and delete there)") from None


def _remove_all_but(root: str, keep: set[str]) -> None:
    """Deletes every file under `root` whose relative '/'-separated name is not in `keep`, and empty directories."""
    for directory, _, names in os.walk(root, topdown=False):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        for name in names:
            if (name if relative == "." else f"{relative}/{name}") not in keep:
                os.remove(os.path.join(directory, name))
        if directory != root and not os.listdir(directory):
            os.rmdir(directory)
