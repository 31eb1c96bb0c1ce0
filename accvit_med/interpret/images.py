"""Image files named on the command line: files as given, folders searched recursively."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


from accvit_med.datasets.imagecheck import find_unreadable
from accvit_med.datasets.imagepolicy import is_candidate
from accvit_med.errors import UserError
from accvit_med.progress import show_progress

# What Pillow decodes among the formats medical image exports use, and DICOM (read with pydicom).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom"})


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given (whatever their extension) and, under each folder, every image file, sorted.

    Below a folder, what the image policy never takes as input (hidden and AppleDouble files, our
    ``.accvit-cache``) is left out.

    A path named twice (or found under two folders given) is listed once, at its first place.
    """
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            below = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and is_candidate(p, path))
            if not below:
                raise UserError(f"folder '{path}' holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); pass another folder")
            found.update(dict.fromkeys(below))
        elif path.is_file():
            found[path] = None
        else:
            raise UserError(f"'{path}' does not exist; pass image files or folders of images")
    if not found:
        raise UserError("no images given; pass image files or folders of images")
    return list(found)


def check_readable(paths: list[Path], skip_bad: bool, progress: bool = True) -> tuple[list[Path], list[tuple[str, str]]]:
    """The readable ``paths`` and the (path, reason) of the others.

    Every file is opened before any inference starts, so a damaged image 900 of 1,000 stops the
    command at once (or, with ``skip_bad``, is left out) instead of after the work on the first 899.
    """
    problems = find_unreadable(Path("."), [str(p) for p in paths], progress=show_progress(progress))
    if problems and not skip_bad:
        first, reason = problems[0]
        more = f" (and {len(problems) - 1} more unreadable)" if len(problems) > 1 else ""
        raise UserError(f"cannot read image '{first}' ({reason}){more}; remove or replace it, or pass --skip-bad")
    bad = {path for path, _ in problems}
    return [p for p in paths if str(p) not in bad], problems
