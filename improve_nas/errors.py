"""The error types users see, and the one-line form of an I/O failure.

Exit codes of the command line (README, "Exit codes"): 0 done, 2 bad input (`UsageError`), 74 an I/O error (no
space, no permission, a read-only file system: `io_error_line`), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM.
After 74, 130 and 143 the same command resumes the run.
"""

from __future__ import annotations

import difflib
import errno
from typing import Iterable

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


def nearest(name: str, choices: Iterable[str]) -> str:
    """"did you mean X? " naming up to three `choices` close to a mistyped `name` (or containing it), else "".

    Ends with a space so a message can go on with the full list of choices on the same line.
    """
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if len(name) >= 4:  # "paper" -> paper_cifar10, "dropout" -> dense_dropout_keep_prob
        close += [choice for choice in choices if name.lower() in choice.lower() and choice not in close]
    if not close:
        return ""
    close = close[:3]
    return f"did you mean {' or '.join(close) if len(close) <= 2 else ', '.join(close[:-1]) + ' or ' + close[-1]}? "


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
