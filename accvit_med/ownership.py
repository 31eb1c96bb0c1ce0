"""Proof that a folder is ours before anything deletes it.

Every folder a later command may replace (a run, a report, a demo, a sweep) holds a marker file,
``.accvit-med.json``, that we write when we create the folder: its kind, the tool version, the
time, and the top-level names the folder is meant to hold. ``--force`` and report replacement go
through :func:`remove_owned`, which deletes a folder only when

- its marker says it is ours and of the expected kind (a folder made by an older version, without
  a marker, is refused: we never guess from file names),
- it holds nothing at its top level that the marker does not list (a user's ``NOTES.md`` dropped
  into a run folder keeps the whole folder alive), and
- it is neither the current folder nor one of its parents, nor a symbolic link.

Otherwise the refusal is one line naming the folder (a :class:`UserError`, exit code 2).

Example (the API a new command uses)::

    check_replaceable(out, "sweep")     # before the work: refuse now, not after hours
    remove_owned(out, "sweep")          # deletes only if owned (no-op when missing or empty)
    write_marker(out, "sweep", contents=["runs", "sweep.csv"])
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

from accvit_med.errors import UserError

MARKER_NAME = ".accvit-med.json"
# Names we may leave next to the listed contents: the lock of a run being trained and the
# temporary siblings of an atomic write that a SIGKILL interrupted.
ALWAYS_OURS = (MARKER_NAME, ".accvit-med.lock", ".*.tmp")


def write_marker(folder: str | os.PathLike, kind: str, contents: Optional[Iterable[str]] = None) -> Path:
    """Create ``folder`` if needed and mark it as ours, of ``kind``.

    Args:
        folder: the folder we created (or are filling).
        kind: what it is: "run", "report", "demo", "sweep", ...
        contents: top-level names (glob patterns allowed) the folder may hold; None allows any,
            which leaves only the marker and the current-folder checks to protect it.
    """
    from accvit_med import __version__
    from accvit_med.fileio import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = {
        "kind": kind,
        "tool": "accvit-med",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "contents": None if contents is None else sorted(set(contents)),
    }
    atomic_write_json(folder / MARKER_NAME, marker)
    return folder / MARKER_NAME


def read_marker(folder: str | os.PathLike) -> Optional[dict]:
    """The marker's fields, or None when there is none or it is not ours (unreadable, foreign)."""
    path = Path(folder) / MARKER_NAME
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("tool") != "accvit-med":
        return None
    return marker


def owned_by_us(folder: str | os.PathLike, kind: str) -> bool:
    """True if ``folder`` carries our marker of ``kind`` and nothing we did not list."""
    return _refusal(Path(folder), kind) is None


def check_replaceable(folder: str | os.PathLike, kind: str) -> bool:
    """Raise what :func:`remove_owned` would refuse, deleting nothing; True if there is work to replace."""
    folder = Path(folder)
    if not _holds_anything(folder):
        return False
    reason = _refusal(folder, kind)
    if reason is not None:
        raise UserError(reason)
    return True


def remove_owned(folder: str | os.PathLike, kind: str) -> bool:
    """Delete ``folder`` if we can prove it is ours and of ``kind``; refuse in one line otherwise.

    A missing or empty folder is left as it is (nothing to prove, nothing lost). Returns True
    when something was deleted.
    """
    folder = Path(folder)
    if not check_replaceable(folder, kind):
        return False
    shutil.rmtree(folder)
    return True


def _holds_anything(folder: Path) -> bool:
    if folder.exists() and not folder.is_dir():
        raise UserError(f"'{folder}' is a file, not a folder; choose another output folder")
    return folder.is_dir() and any(folder.iterdir())


def _refusal(folder: Path, kind: str) -> Optional[str]:
    """Why ``folder`` must not be deleted as a ``kind`` folder, or None if it may."""
    if folder.is_symlink():
        # The link may be ours to replace, but what it points at is somewhere we never chose.
        return (f"'{folder}' is a symbolic link; accvit-med never deletes through a link, "
                "choose another output folder or remove the link by hand")
    resolved = folder.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        return (f"'{folder}' is the current folder or one of its parents; accvit-med never deletes it, "
                "choose a new output folder")
    marker = read_marker(folder)
    if marker is None:
        return (f"'{folder}' is not an accvit-med {kind} folder (no {MARKER_NAME} marker; older "
                "accvit-med versions wrote none); it is left untouched: remove it by hand or "
                "choose another output folder")
    if marker.get("kind") != kind:
        return (f"'{folder}' is an accvit-med {marker.get('kind')} folder, not a {kind} folder; "
                "choose another output folder")
    contents = marker.get("contents")
    if contents is not None:
        allowed = list(contents) + list(ALWAYS_OURS)
        foreign = sorted(p.name for p in folder.iterdir()
                         if not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in allowed))
        if foreign:
            return (f"'{folder}' holds '{foreign[0]}' that accvit-med did not write"
                    f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}; "
                    "move it out or remove the folder by hand")
    return None
