"""Small file helpers shared by every stage: atomic writes and checksums.

Writes go to a temporary file in the same folder and are renamed into place, so an
interrupted command never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # it names a random temporary name nobody knows of: name our file
        err.filename, err.filename2 = str(path), None
        raise
    try:
        # mkstemp makes the file private (0600); what we write is meant to be shared as the user's
        # umask says (0644 by default), like a file written with open().
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename in (None, tmp):
            # A full disk reported by write() or fsync() names no file, and a failed rename names
            # the temporary one (gone now): the error is about the file we were writing.
            err.filename, err.filename2 = str(path), None
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def check_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """Raise a one-line UserError unless files can be created in ``folder`` (or where it would be made).

    Checked before long work starts, by creating and removing a probe file in the nearest existing
    folder: this catches read-only file systems and missing permissions alike.
    """
    from accvit_med.errors import UserError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UserError(f"cannot write to {option} '{folder}': '{existing}' is a file; choose another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".accvit-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot write to {option} '{folder}' ({reason}); choose a writable {option}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    # newline="" keeps the exact bytes we were given (byte-identical outputs across platforms).
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
