"""Claiming a run directory before training into it: the checks, the marker, the lock.

An existing run is never overwritten by accident: ``resume`` continues it, ``force`` starts again,
and only in a folder whose ``.accvit-med.json`` marker proves we made it (see
:mod:`accvit_med.ownership`). ``.accvit-med.lock`` keeps two processes from training into one run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from accvit_med.errors import UserError
from accvit_med.ownership import check_replaceable, owned_by_us, remove_owned, write_marker
from accvit_med.rundir.layout import RUN_FILES, RunDir

RUN_KIND = "run"
# Top-level names a run directory holds (finetune and pretrain, and the default output folders of
# evaluate and gradcam, and the logs/ of `accvit-med sweep`); anything else is the user's.
RUN_CONTENTS = (*RUN_FILES, "checkpoints", "evaluate", "gradcam", "logs")
LOCK_NAME = ".accvit-med.lock"
_HELD_LOCKS: dict[Path, int] = {}


def _holds_files(path: Path) -> bool:
    # Empty folders (e.g. the skeleton of a run that failed before its first write) hold no work,
    # nor does logs/, where `accvit-med sweep` keeps a run's output before the run starts.
    return path.is_dir() and any(p.is_file() for p in path.rglob("*") if p.relative_to(path).parts[0] != "logs")


def _holds_no_epoch(run: RunDir) -> bool:
    """True for a run of ours that stopped before its first epoch ended: a plain rerun may reuse it."""
    if not owned_by_us(run.path, RUN_KIND) or run.best.exists():
        return False
    try:
        lines = run.history.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    return len(lines) <= 1


def check_run_dir(path: str | os.PathLike, resume: bool, force: bool) -> bool:
    """Raise what :func:`prepare_run_dir` would refuse, touching nothing; True if a run is there."""
    run = RunDir(Path(path))
    if resume and force:
        raise UserError("--resume and --force contradict each other; pass one of them")
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"'{run.path}' is a file, not a run directory; choose another --out")
    check_unlocked(run.path)
    exists = _holds_files(run.path)
    if resume:
        if not run.last.is_file():
            raise UserError(f"cannot resume: '{run.last}' does not exist; start the run without --resume")
        return True
    if exists and not force and not _holds_no_epoch(run):
        raise UserError(f"run directory '{run.path}' already exists; pass --resume to continue it or --force to start again")
    if exists:
        # --force deletes a previous run we can prove we wrote, never an unrelated folder.
        check_replaceable(run.path, RUN_KIND)
    return exists


def prepare_run_dir(path: str | os.PathLike, resume: bool, force: bool) -> RunDir:
    """Check what may be done with ``path``, make it ready and lock it; never destroys work unasked.

    The lock (see :func:`lock_run_dir`) is held until :func:`release_run_dir` or the process ends.
    """
    run = RunDir(Path(path))
    exists = check_run_dir(path, resume, force)
    if not resume:
        if exists:
            remove_owned(run.path, RUN_KIND)  # --force (or a run without a finished epoch), proven ours
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        write_marker(run.path, RUN_KIND, RUN_CONTENTS)
    lock_run_dir(run.path)
    return run


def check_unlocked(path: Path) -> None:
    """Refuse a run directory another process is training into (its lock is held)."""
    lock = path / LOCK_NAME
    if path.resolve() in _HELD_LOCKS or not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)  # a stale lock file: its process has ended
    except OSError:
        holder = _lock_holder(fd)
        raise UserError(f"run directory '{path}' is in use by another process{holder}; wait for it to "
                        "finish or choose another --out") from None
    finally:
        os.close(fd)


def lock_run_dir(path: str | os.PathLike) -> None:
    """Take the run directory's lock (flock: the kernel drops it when the process dies, so a
    lock file left by a killed run is stale and simply taken over)."""
    path = Path(path)
    key = path.resolve()
    if key in _HELD_LOCKS:
        return
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise UserError(f"run directory '{path}' is in use by another process{holder}; wait for it to "
                        "finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD_LOCKS[key] = fd


def release_run_dir(path: str | os.PathLike) -> None:
    """Release the lock :func:`prepare_run_dir` took (a no-op when not held)."""
    fd = _HELD_LOCKS.pop(Path(path).resolve(), None)
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
