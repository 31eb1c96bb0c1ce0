"""Image files named on the command line: files as given, folders searched recursively."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional

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
    return list(image_roots(inputs))


def image_roots(inputs: Iterable[str | os.PathLike]) -> dict[Path, Optional[Path]]:
    """:func:`collect_images`' paths, each with the folder it was found under (None: named as is).

    That folder is the image's data root for the image policy: a symlink below it may not lead out.
    """
    found: dict[Path, Optional[Path]] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            below = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and is_candidate(p, path))
            if not below:
                extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise UserError(f"folder '{path}' holds no image files ({extensions}); pass another folder")
            for image in below:
                found.setdefault(image, path)
        elif path.is_file():
            found.setdefault(path, None)
        else:
            raise UserError(f"'{path}' does not exist; pass image files or folders of images")
    if not found:
        raise UserError("no images given; pass image files or folders of images")
    return found


def check_readable(paths: list[Path], skip_bad: bool, progress: bool = True,
                   roots: Optional[Mapping[Path, Optional[Path]]] = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """The readable ``paths`` and the (path, reason) of the others.

    ``roots`` (from :func:`image_roots`): the folder each path was found under, whose symlink rule
    applies; without it, every path counts as named on the command line.

    Every file is opened before any inference starts, so a damaged image 900 of 1,000 stops the
    command at once (or, with ``skip_bad``, is left out) instead of after the work on the first 899.
    """
    roots = roots or {}
    by_root: dict[Optional[Path], list[Path]] = {}
    for path in paths:
        by_root.setdefault(roots.get(path), []).append(path)
    reasons: dict[str, str] = {}
    for root, members in by_root.items():
        relative = [str(p) if root is None else p.relative_to(root).as_posix() for p in members]
        found = find_unreadable(root, relative, progress=show_progress(progress))
        by_relative = dict(zip(relative, members))
        reasons.update({str(by_relative[rel]): reason for rel, reason in found})
    problems = [(str(p), reasons[str(p)]) for p in paths if str(p) in reasons]
    if problems and not skip_bad:
        first, reason = problems[0]
        more = f" (and {len(problems) - 1} more unreadable)" if len(problems) > 1 else ""
        raise UserError(f"cannot read image '{first}' ({reason}){more}; remove or replace it, or pass --skip-bad")
    return [p for p in paths if str(p) not in reasons], problems
