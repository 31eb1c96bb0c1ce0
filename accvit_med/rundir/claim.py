"""Claiming a run directory before training into it: the checks, the marker, the lock.

An existing run is never overwritten by accident: ``resume`` continues it, ``force`` starts again,
and only in a folder whose ``.accvit-med.json`` marker proves we made it (see
:mod:`accvit_med.ownership`). ``.accvit-med.lock`` keeps two processes from training into one run:
a POSIX record lock, which dies with the process that took it (see :func:`lock_run_dir`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from accvit_med.errors import UserError
from accvit_med.ownership import check_replaceable, owned_by_us, remove_owned, write_marker
from accvit_med.rundir.layout import RUN_FILES, RunDir

RUN_KIND = "run"
# Top-level names a run directory holds (finetune and pretrain, and the default output folders of
# evaluate (external/: evaluate --dataset) and gradcam, and the logs/ of `accvit-med sweep`);
# anything else is the user's.
RUN_CONTENTS = (*RUN_FILES, "checkpoints", "evaluate", "external", "gradcam", "logs")
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
        return not run.history()
    except (OSError, UserError):  # an unreadable history holds no epoch we could resume
        return True


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
        raise UserError(f"run directory '{run.path}' already exists; "
                        "pass --resume to continue it or --force to start again")
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
    if not lock.is_file() or _held_here(lock):
        # Never open a lock file this process holds: closing any descriptor of it drops the lock.
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return
    try:
        _try_lock(fd, path)
        fcntl.lockf(fd, fcntl.LOCK_UN)  # a stale lock file: its process has ended
    finally:
        os.close(fd)


def lock_run_dir(path: str | os.PathLike) -> None:
    """Take the run directory's lock, held by this process alone until it releases it or ends.

    A POSIX record lock (``fcntl.lockf``) belongs to the process that took it: the kernel drops it
    when that process dies, and children forked afterwards (DataLoader workers) do not hold it,
    so a run killed with SIGKILL can be resumed at once while its workers are still exiting. (An
    ``flock`` belongs to the open file description, which forked children share: it would outlive
    the killed process in its workers. Closing on exec does not help, workers are forked.)
    """
    path = Path(path)
    key = path.resolve()
    if key in _HELD_LOCKS or _held_here(path / LOCK_NAME):
        return
    while True:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd, path)
        except UserError:
            os.close(fd)
            raise
        if _same_file(fd, path / LOCK_NAME):
            break
        # The file was removed or replaced between our open and our lock: what we locked no
        # longer guards the folder. Unlocks by closing; the next round locks the current file.
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD_LOCKS[key] = fd


def release_run_dir(path: str | os.PathLike) -> None:
    """Release the lock :func:`prepare_run_dir` took (a no-op when not held)."""
    fd = _HELD_LOCKS.pop(Path(path).resolve(), None)
    if fd is not None:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def _try_lock(fd: int, path: Path) -> None:
    """Lock ``fd`` without waiting; a lock held elsewhere is refused in one line naming its pid."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EAGAIN):  # e.g. ENOLCK: a file system without locks
            raise UserError(f"cannot lock '{path / LOCK_NAME}' ({err.strerror}); choose an --out on a local "
                            "file system") from None
        raise UserError(f"run directory '{path}' is in use by another process{_lock_holder(fd)}; wait for it "
                        "to finish or choose another --out") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        found = path.stat()
    except OSError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (found.st_dev, found.st_ino)


def _held_here(lock: Path) -> bool:
    """True if ``lock`` is (by identity, whatever the path) a lock file this process holds."""
    return any(_same_file(fd, lock) for fd in _HELD_LOCKS.values())


def _lock_holder(fd: int) -> str:
    # The pid is written by the process that took the lock, after taking it: it names a live holder.
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
