"""One writer per run directory: a lock that `run.train` holds for the whole run.

    with run_lock.hold(model_dir, force=False):   # UsageError (exit 2) naming the holder if another process has it
        ...                                         # train

The lock is `MODEL_DIR/.lock`, a small JSON record of its holder (host, pid, start time), removed on release:

- local: an OS file lock (`fcntl.flock`) on that file. The kernel drops it when its process dies, however it dies, so
  the lock of a dead process is simply taken over (with one line naming it);
- gs://: the object itself, created with a generation precondition (`if_generation_match=0`, so of two processes
  exactly one creates it) and deleted on release only if it is still the generation this process created. Nothing
  releases it when its process is killed: the lock of a dead process on the same host is taken over; a lock from
  another host is only taken with `--force_unlock`.

`force=True` (`--force_unlock`) takes the lock whoever holds it, and says whose it broke. Names starting with "."
are never synced by `gcs.DirectoryMirror`, so the lock object is neither pulled into a gs:// run's working copy nor
deleted by its pushes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

from improve_nas.errors import UsageError
from improve_nas.storage import gcs

LOCK_NAME = ".lock"
# Rounds of "create, else inspect and maybe break" before giving up; more only when others keep racing for it.
_ATTEMPTS = 5


class RunDirectoryLocked(UsageError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def hold(model_dir: str, *, force: bool = False) -> Iterator[None]:
    """Holds the lock of `model_dir` (local path or gs://BUCKET/PATH) until the block ends, however it ends.

    Raises:
      RunDirectoryLocked: another process holds it (and `force` is False).
      UsageError: the lock file cannot be created (model_dir names a file, no permission, ...).
    """
    lock = _GcsLock(model_dir) if gcs.is_gs_url(model_dir) else _LocalLock(model_dir)
    lock.acquire(force)
    try:
        yield
    finally:
        lock.release()


def _record() -> bytes:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": started}).encode("utf-8")


def _holder(data: bytes) -> dict | None:
    """The holder a lock file records; None when it is empty or unreadable (its writer died before writing it)."""
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(holder, dict) or not {"host", "pid", "started"} <= set(holder):
        return None
    return holder if isinstance(holder["pid"], int) else None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "a process that recorded no host or pid"
    return f"pid {holder['pid']} on {holder['host']} (started {holder['started']})"


def _locked_error(where: str, holder: dict | None) -> RunDirectoryLocked:
    return RunDirectoryLocked(f"model_dir {where!r} is in use by {_describe(holder)}: wait for that run to end, or if "
                              "it is no longer running, rerun with --force_unlock")


def _broke(holder: dict | None) -> None:
    print(f"--force_unlock: broke the lock of {_describe(holder)}", flush=True)


class _LocalLock:
    def __init__(self, directory: str):
        self._directory = directory
        self._path = os.path.join(directory, LOCK_NAME)
        self._created: list[str] = []  # directories this process made for the lock, deepest first
        self._fd: int | None = None

    def acquire(self, force: bool) -> None:
        try:
            self._acquire(force)
        except OSError as error:
            self._remove_created()
            raise UsageError(f"model_dir {self._directory!r}: cannot create the lock file {self._path}: "
                             f"{error.strerror or error}") from None

    def _acquire(self, force: bool) -> None:
        for _ in range(_ATTEMPTS):
            self._make_directory()
            try:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # another process removed the directory it had made: make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _holder(_read_fd(fd))
                os.close(fd)
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not force:
                    raise _locked_error(self._directory, holder) from None
                # A flock cannot be taken from a live process: unlinking the file leaves it locking a file that is
                # no longer the lock, and the next round creates a new one.
                _broke(holder)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
                continue
            if not self._is_current(fd):  # its holder released (unlinked) it between our open and flock
                os.close(fd)
                continue
            previous = _holder(_read_fd(fd))
            if previous is not None:
                print(f"took over the lock of pid {previous['pid']} on {previous['host']}, which is no longer "
                      "running", flush=True)
            os.ftruncate(fd, 0)
            os.pwrite(fd, _record(), 0)
            self._fd = fd
            return
        raise UsageError(f"model_dir {self._directory!r}: could not take the lock {self._path} in {_ATTEMPTS} "
                         "attempts (other processes keep taking it); try again")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if self._is_current(self._fd):  # else another process broke it (--force_unlock) and the file is theirs
                os.unlink(self._path)
        finally:
            os.close(self._fd)
            self._fd = None
            self._remove_created()

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self._path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _make_directory(self) -> None:
        missing, directory = [], os.path.abspath(self._directory)
        while not os.path.exists(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        os.makedirs(self._directory, exist_ok=True)
        self._created += [path for path in missing if path not in self._created]

    def _remove_created(self) -> None:
        """Removes the directories this process created, if nothing else was written there (bad input: no trace)."""
        for directory in self._created:
            try:
                os.rmdir(directory)
            except OSError:  # not empty (the run wrote something) or already gone
                break
        self._created = []


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


class _GcsLock:
    def __init__(self, model_dir: str):
        self._url = f"{model_dir.rstrip('/')}/{LOCK_NAME}"
        self._model_dir = model_dir
        self._client = gcs.storage_client()
        self._generation: int | None = None

    def acquire(self, force: bool) -> None:
        for _ in range(_ATTEMPTS):
            generation = gcs.create_if_absent(_record(), self._url, content_type="application/json",
                                              client=self._client)
            if generation is not None:
                self._generation = generation
                return
            try:
                data, generation = gcs.read_with_generation(self._url, client=self._client)
            except FileNotFoundError:  # released meanwhile
                continue
            holder = _holder(data)
            if force:
                _broke(holder)
            elif holder is not None and holder["host"] == socket.gethostname() and not _running(holder["pid"]):
                print(f"took over the lock of pid {holder['pid']} on {holder['host']}, which is no longer running",
                      flush=True)
            else:
                raise _locked_error(self._model_dir, holder)
            # Only the generation inspected: if another process replaced it meanwhile, the next round sees theirs.
            gcs.delete_if_generation(self._url, generation, client=self._client)
        raise UsageError(f"model_dir {self._model_dir!r}: could not take the lock {self._url} in {_ATTEMPTS} "
                         "attempts (other processes keep taking it); try again")

    def release(self) -> None:
        if self._generation is None:
            return
        if not gcs.delete_if_generation(self._url, self._generation, client=self._client):
            print(f"the lock {self._url} was no longer this process's (broken with --force_unlock?); left alone",
                  flush=True)
        self._generation = None


def _running(pid: int) -> bool:
    """Whether a process `pid` runs on this host. Our own pid in a lock we do not hold is a previous process's: a
    restarted container often gives its first process the same pid."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
