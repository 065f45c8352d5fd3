"""Google Cloud Storage for run directories and packages: a thin layer over google-cloud-storage.

Objects are written whole: a GCS upload becomes visible only when complete, so a reader never sees half a file.
Credentials come from the environment (Application Default Credentials); when `STORAGE_EMULATOR_HOST` is set, the
client library talks to that emulator instead, anonymously (what the tests do).

`DirectoryMirror` keeps a local working directory and a gs:// prefix in step. A run whose model_dir is on gs:// trains
in a local working copy:

    mirror = DirectoryMirror("gs://bucket/runs/cifar10", "/tmp/improve_nas/cifar10")
    mirror.pull()    # once, before training: whatever an earlier attempt pushed (resume)
    ...              # train; after every checkpoint and every finished iteration:
    mirror.push()    # upload what is new or changed, then drop remote copies of files deleted locally

Pushes order their uploads so that pointer files come last (`iterations/<t>/architecture.json`, which marks an
iteration finished, after the members it names): a reader of the bucket, or a resume after a crash mid-push, never
sees a finished iteration whose files are missing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import mimetypes
import os
import posixpath
import re
import tempfile
from typing import TYPE_CHECKING, Iterable

from improve_nas import extras
from improve_nas.errors import UsageError

if TYPE_CHECKING:
    from google.cloud import storage

SCHEME = "gs://"
# Files that point at other files of the same push; uploaded (and downloaded) after everything else.
COMMIT_LAST = ("architecture.json",)
# Bucket names: lowercase letters, digits, dots, dashes and underscores, starting and ending with a letter or digit.
# (GCS also wants 3-63 characters; that is left to GCS, so that short placeholder names like gs://b work in
# dry runs and tests.)
_BUCKET = re.compile(r"[a-z0-9]([a-z0-9._-]{0,220}[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class GcsObject:
    """One stored object: its URL, size in bytes and base64 MD5 (None for composite objects)."""

    url: str
    size: int
    md5: str | None


def is_gs_url(path: str) -> bool:
    return path.startswith(SCHEME)


def parse_gs_url(url: str) -> tuple[str, str]:
    """Splits `gs://bucket/path/to/object` into `("bucket", "path/to/object")`; the path may be empty.

    Raises:
      UsageError: not a gs:// URL, or an invalid bucket name.
    """
    if not is_gs_url(url):
        raise UsageError(f"{url!r} is not a gs:// URL (expected gs://BUCKET/PATH)")
    bucket, _, path = url[len(SCHEME):].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(f"{url!r} names an invalid bucket {bucket!r}: lowercase letters, digits, '-', '_' or '.', "
                         "starting and ending with a letter or digit")
    return bucket, path


def storage_client(project: str | None = None) -> storage.Client:
    """A client with the environment's credentials, or anonymous against `STORAGE_EMULATOR_HOST` when set.

    Raises:
      UsageError: no credentials found.
    """
    extras.require("cloud", purpose="a gs:// path")
    import google.auth.exceptions
    from google.cloud import storage

    try:
        return storage.Client(project=project)  # an explicit None: object access needs no project
    except google.auth.exceptions.DefaultCredentialsError:
        raise UsageError("no Google Cloud credentials found: run `gcloud auth application-default login`, or set "
                         "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file") from None


def upload_file(local_path: str, url: str, *, client: storage.Client | None = None) -> None:
    """Uploads a local file to `url`, replacing any object there."""
    content_type = mimetypes.guess_type(local_path)[0] or "application/octet-stream"
    _blob(url, client).upload_from_filename(local_path, content_type=content_type)


def upload_bytes(data: bytes, url: str, *, content_type: str = "application/octet-stream",
                 client: storage.Client | None = None) -> None:
    """Writes `data` to the object `url`, replacing any object there."""
    _blob(url, client).upload_from_string(data, content_type=content_type)


def download_file(url: str, local_path: str, *, client: storage.Client | None = None) -> None:
    """Downloads `url` to `local_path`, atomically: a temporary file in the same directory renamed into place.

    Raises:
      FileNotFoundError: no object at `url`.
    """
    from google.api_core import exceptions

    directory = os.path.dirname(os.path.abspath(local_path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # hidden: a mirror never pushes it
    os.close(handle)
    try:
        _blob(url, client).download_to_filename(temporary)
        os.replace(temporary, local_path)
    except exceptions.NotFound:
        raise FileNotFoundError(f"no object at {url}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_bytes(url: str, *, client: storage.Client | None = None) -> bytes:
    """The content of the object `url`.

    Raises:
      FileNotFoundError: no object at `url`.
    """
    from google.api_core import exceptions

    try:
        return _blob(url, client).download_as_bytes()
    except exceptions.NotFound:
        raise FileNotFoundError(f"no object at {url}") from None


def create_if_absent(data: bytes, url: str, *, content_type: str = "application/octet-stream",
                     client: storage.Client | None = None) -> int | None:
    """Writes `data` to `url` only if no object is there (generation precondition 0: of concurrent writers, exactly
    one succeeds). Returns the new object's generation, or None when an object already exists."""
    from google.api_core import exceptions

    blob = _blob(url, client)
    try:
        blob.upload_from_string(data, content_type=content_type, if_generation_match=0)
    except exceptions.PreconditionFailed:
        return None
    return int(blob.generation)


def read_with_generation(url: str, *, client: storage.Client | None = None) -> tuple[bytes, int]:
    """The content of the object `url` and its generation, read as one version.

    Raises:
      FileNotFoundError: no object at `url` (or it was replaced while being read: the caller looks again).
    """
    from google.api_core import exceptions

    blob = _blob(url, client)
    try:
        blob.reload()
        generation = int(blob.generation)  # before the download, which may reset it from the response's headers
        return blob.download_as_bytes(if_generation_match=generation), generation
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        raise FileNotFoundError(f"no object at {url}") from None


def delete_if_generation(url: str, generation: int, *, client: storage.Client | None = None) -> bool:
    """Deletes the object `url` if it is still `generation`; False if it is gone or was replaced meanwhile."""
    from google.api_core import exceptions

    try:
        _blob(url, client).delete(if_generation_match=generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        return False
    return True


def list_blobs(url: str, *, client: storage.Client | None = None) -> list[GcsObject]:
    """Every object whose name starts with the URL's path (a plain prefix: `gs://b/run` also lists `run2/...`)."""
    bucket, prefix = parse_gs_url(url)
    client = client or storage_client()
    return [GcsObject(f"{SCHEME}{bucket}/{blob.name}", blob.size or 0, blob.md5_hash)
            for blob in client.list_blobs(bucket, prefix=prefix)]


def exists(url: str, *, client: storage.Client | None = None) -> bool:
    """Whether an object is stored at exactly `url`."""
    return _blob(url, client).exists()


def delete_prefix(url: str, *, client: storage.Client | None = None) -> int:
    """Deletes every object under the directory `url` (`gs://b/run` is taken as `gs://b/run/`). Returns the count.

    Raises:
      UsageError: `url` names a whole bucket (refused: too easy to do by accident).
    """
    bucket, path = parse_gs_url(url)
    if not path.strip("/"):
        raise UsageError(f"refusing to delete everything in bucket {bucket!r}; name a directory, gs://{bucket}/DIR")
    client = client or storage_client()
    blobs = list(client.list_blobs(bucket, prefix=path.rstrip("/") + "/"))
    for blob in blobs:
        blob.delete()
    return len(blobs)


def file_md5(path: str) -> str:
    """The base64 MD5 of a local file, as GCS reports it for an object."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def _blob(url: str, client: storage.Client | None):
    bucket, path = parse_gs_url(url)
    if not path or path.endswith("/"):
        raise UsageError(f"{url!r} names a directory, not an object")
    return (client or storage_client()).bucket(bucket).blob(path)


class DirectoryMirror:
    """A local working directory kept in step with a gs:// prefix (see the module docstring for the protocol).

    The mirror assumes it is the only writer of the prefix while it lives. It remembers, per file, the remote size
    and MD5 and the local (size, mtime, inode) it last saw them match, so a push hashes only files whose stat
    changed and uploads only files whose content did. Names with a component starting with "." (temporary files,
    staging directories of the run directory) are never synced: they are writes in progress.

    Args:
      gs_url: the remote directory, e.g. `gs://bucket/runs/cifar10`.
      local_dir: the local working copy (created when missing).
      client: a storage client; by default one from the environment, made on first use.
      commit_last: base names of pointer files, transferred after all other files of the same push or pull.
    """

    def __init__(self, gs_url: str, local_dir: str, *, client: storage.Client | None = None,
                 commit_last: Iterable[str] = COMMIT_LAST):
        self._bucket, path = parse_gs_url(gs_url)
        self._prefix = path.strip("/") + "/" if path.strip("/") else ""
        self.gs_url = f"{SCHEME}{self._bucket}/{self._prefix}".rstrip("/")
        self.local_dir = os.path.abspath(local_dir)
        self._client = client
        self._commit_last = frozenset(commit_last)
        self._remote: dict[str, tuple[int, str | None]] | None = None  # relative path -> (size, md5) stored
        # Relative path -> (local stat, remote (size, md5)) when the two were last seen to hold the same content.
        self._synced: dict[str, tuple[tuple[int, int, int], tuple[int, str | None]]] = {}

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = storage_client()
        return self._client

    def pull(self) -> list[str]:
        """Downloads every remote file missing locally or different from the local one (remote wins).

        Local files absent remotely are left alone. Returns the relative paths downloaded, in download order.
        """
        os.makedirs(self.local_dir, exist_ok=True)
        remote = self._list_remote()
        wanted = self._ordered(name for name, (size, md5) in remote.items() if not self._matches(name, size, md5))
        for name in wanted:
            download_file(self._url(name), self._local(name), client=self.client)
            self._synced[name] = (_stat(self._local(name)), remote[name])
        return wanted

    def push(self, paths: Iterable[str] | None = None) -> list[str]:
        """Uploads new and changed local files, pointer files last; then deletes remote copies of synced files
        that were deleted locally (e.g. checkpoints pruned by `keep_checkpoint_max`).

        Args:
          paths: files or directories (relative to `local_dir`, or absolute inside it) to push; None pushes the
            whole directory. Deletions are looked for only within them.

        Returns:
          The relative paths uploaded, in upload order.
        """
        remote = self._remote if self._remote is not None else self._list_remote()
        scopes = None if paths is None else [self._relative(path) for path in paths]
        present = [name for name in self._local_files() if _in_scopes(name, scopes)]
        changed = [name for name in present if not self._matches(name, *remote.get(name, (-1, None)))]
        uploaded = self._ordered(changed)
        for name in uploaded:
            # Recorded before the upload: if the file is replaced meanwhile, the next push sees a new stat and
            # re-checks, instead of trusting a record of content that was never uploaded.
            stat, md5 = _stat(self._local(name)), file_md5(self._local(name))
            upload_file(self._local(name), self._url(name), client=self.client)
            remote[name] = (stat[0], md5)
            self._synced[name] = (stat, remote[name])
        present_set = set(present)
        gone = sorted(name for name in self._synced if _in_scopes(name, scopes) and name not in present_set)
        for name in gone:
            self._delete_remote(name)
            remote.pop(name, None)
            del self._synced[name]
        return uploaded

    def _list_remote(self) -> dict[str, tuple[int, str | None]]:
        self._remote = {}
        for blob in self.client.list_blobs(self._bucket, prefix=self._prefix):
            name = blob.name[len(self._prefix):]
            if name and not name.endswith("/") and not _hidden(name):
                self._remote[name] = (blob.size or 0, blob.md5_hash)
        return self._remote

    def _matches(self, name: str, size: int, md5: str | None) -> bool:
        """Whether the local file `name` holds what the remote (size, md5) describes; hashes only on a stat change."""
        path = self._local(name)
        if not os.path.isfile(path) or md5 is None:
            return False
        stat = _stat(path)
        if self._synced.get(name) == (stat, (size, md5)):
            return True
        if stat[0] != size or file_md5(path) != md5:
            return False
        self._synced[name] = (stat, (size, md5))
        return True

    def _delete_remote(self, name: str) -> None:
        from google.api_core import exceptions

        try:
            self.client.bucket(self._bucket).blob(self._prefix + name).delete()
        except exceptions.NotFound:  # already gone: the goal state
            pass

    def _local_files(self) -> list[str]:
        found = []
        for directory, subdirectories, names in os.walk(self.local_dir):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            relative = os.path.relpath(directory, self.local_dir).replace(os.sep, "/")
            found.extend(name if relative == "." else f"{relative}/{name}"
                         for name in names if not name.startswith("."))
        return sorted(found)

    def _ordered(self, names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda name: (posixpath.basename(name) in self._commit_last, name))

    def _relative(self, path: str) -> str:
        absolute = os.path.abspath(os.path.join(self.local_dir, path))
        relative = os.path.relpath(absolute, self.local_dir).replace(os.sep, "/")
        if relative == ".." or relative.startswith("../"):
            raise ValueError(f"{path!r} is outside the mirrored directory {self.local_dir}")
        return "" if relative == "." else relative

    def _local(self, name: str) -> str:
        return os.path.join(self.local_dir, *name.split("/"))

    def _url(self, name: str) -> str:
        return f"{SCHEME}{self._bucket}/{self._prefix}{name}"


def _stat(path: str) -> tuple[int, int, int]:
    # Size, mtime and inode: an atomic rewrite (new file renamed into place) changes the inode even when the
    # filesystem's clock is too coarse to change the mtime.
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


def _in_scopes(name: str, scopes: list[str] | None) -> bool:
    return scopes is None or any(not scope or name == scope or name.startswith(scope + "/") for scope in scopes)
