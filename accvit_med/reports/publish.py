"""Publishing a report folder: checked before any work, built beside it, swapped in at the end.

An interrupted report leaves the previous one intact, and only a folder whose ownership marker
proves an earlier report wrote it (holding nothing else) is ever replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from accvit_med.errors import UserError
from accvit_med.fileio import check_writable
from accvit_med.ownership import check_replaceable, write_marker

REPORT_KIND = "report"


def check_out_dir(out_dir: Path) -> None:
    """UserError unless ``out_dir`` can become (or be replaced by) a report folder."""
    resolved, cwd = out_dir.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        # The report replaces its folder as a whole, which the current folder cannot be.
        raise UserError(f"--out '{out_dir}' is the current folder or one of its parents; pass a new folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out '{out_dir}' is a file; pass a folder for the report")
    check_writable(out_dir.parent if out_dir.exists() else out_dir)
    # The report replaces the folder: only one whose marker proves we wrote it, holding nothing else.
    check_replaceable(out_dir, REPORT_KIND)


def publish(out_dir: Path, write_contents: Callable[[Path], list[str]]) -> list[str]:
    """Fill a staging folder with ``write_contents(folder)`` (which returns the files it wrote,
    relative to it), mark it as a report and move it to ``out_dir``; returns those files."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a report is meant to be shared
        files = write_contents(staging)
        # Top-level names only: what remove_owned may later find there and delete with the report.
        write_marker(staging, REPORT_KIND, {f.split("/")[0] for f in files})
        if out_dir.exists() and any(out_dir.iterdir()):
            check_replaceable(out_dir, REPORT_KIND)  # again: the folder may have changed meanwhile
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, retired / "report")
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files
