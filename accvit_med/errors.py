"""The one exception type for user mistakes.

A :class:`UserError` is something the user can fix (a missing folder, a wrong CSV column, an
unknown model). Its message is one line that names the thing and the fix; the CLI prints it on
stderr and exits with code 2 (a subclass may name another code, e.g. :class:`TrainingDiverged`,
3). Anything else is a bug and keeps its traceback, except the file system's refusals
(:func:`file_system_error`: a full disk, a read-only mount, a folder where a file is expected...),
which are the user's to fix and read as one line too.
"""

import errno


class UserError(Exception):
    """A mistake in the user's input; ``str(err)`` is a one-line message naming the fix."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: multi-line messages are folded so the CLI contract holds.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(UserError):
    """Training stopped because the loss became NaN or infinite; exit code 3 (see docs/reliability.md)."""

    exit_code = 3


# What the operating system said, and what the user can do about it. ENOSPC, EDQUOT, EROFS and
# EFBIG only ever come from writing; the others also come from reading, and count only when they
# name a path (an OSError without one, e.g. from a socket, stays a bug with its traceback).
_WRITING_ONLY = {
    errno.ENOSPC: ("no space left on device", "free some space on that disk or write elsewhere, then run again"),
    errno.EDQUOT: ("disk quota exceeded", "free some of your quota or write elsewhere, then run again"),
    errno.EROFS: ("read-only file system", "write to a writable location"),
    errno.EFBIG: ("file too large for this file system", "write to another file system"),
}
_OF_A_PATH = {
    errno.EACCES: ("permission denied", "fix its permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose another location"),
    errno.EISDIR: ("it is a folder, where a file is expected", "pass a file name, or move that folder away"),
    errno.ENOTDIR: ("a part of the path is a file, where a folder is expected",
                    "rename or move that file, or choose another location"),
    errno.EEXIST: ("a file is in the way where a folder is expected", "rename or move it, or choose another location"),
}


class FileSystemError(UserError):
    """An OSError of the file system, as the one-line contract: the path, the cause, the fix (exit 2)."""


def file_system_error(err: OSError) -> "FileSystemError | None":
    """The one-line error for ``err`` when it is the file system refusing a path; else None (a bug).

    The CLI's error boundary turns every OSError through here, so a full disk or a folder in the way
    reads the same whichever command met it.
    """
    path = err.filename
    if err.errno in _WRITING_ONLY:
        cause, fix = _WRITING_ONLY[err.errno]
        where = f" '{path}'" if path is not None else ""
        return FileSystemError(f"cannot write{where} ({cause}); {fix}")
    if err.errno in _OF_A_PATH and path is not None:
        cause, fix = _OF_A_PATH[err.errno]
        return FileSystemError(f"cannot use '{path}' ({cause}); {fix}")
    return None
