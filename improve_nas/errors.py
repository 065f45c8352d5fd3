"""The error types users see, and the one-line form of an I/O failure.

Exit codes of the command line (README, "Exit codes"): 0 done, 2 bad input (`UsageError`), 74 an I/O error (no
space, no permission, a read-only file system: `io_error_line`), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM.
After 74, 130 and 143 the same command resumes the run.
"""

from __future__ import annotations

import errno

IO_ERROR_EXIT_CODE = 74  # EX_IOERR of sysexits.h
# Phrases by which errors of other libraries (TensorFlow's C++ file system, h5py...) report an OS-level I/O failure.
_IO_PHRASES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
               "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS}
_IO_ERRNOS = frozenset(_IO_PHRASES.values()) | {errno.EIO, errno.EPERM, errno.EFBIG}


class UsageError(ValueError):
    """Bad user input: a wrong flag, hparam, dataset or file.

    The command line prints the message as one line on stderr and exits with code 2,
    before anything is written to `model_dir`. Messages name the bad value and the
    valid choices.
    """


def io_error_line(error: BaseException) -> str | None:
    """One line for an I/O failure anywhere in `error`'s chain of causes (the path and why), else None.

    Keras and TensorFlow wrap the OSError of a full disk in their own errors, or report it only in the message;
    both forms are recognised.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _IO_ERRNOS:
            where = f" {error.filename}" if error.filename else ""
            return f"cannot write{where}: {error.strerror or errno.errorcode.get(error.errno, 'I/O error')}"
        for phrase in _IO_PHRASES:
            if phrase in str(error):
                first = next((line for line in str(error).splitlines() if phrase in line), phrase)
                return f"I/O error: {first.strip()}"
        error = error.__cause__ or error.__context__
    return None
