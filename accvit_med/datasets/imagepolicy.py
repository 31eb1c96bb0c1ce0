"""The one image policy: which files are inputs, how an image is opened, what a bad one is.

Every command that reads images (split --check, prepare, finetune, evaluate, predict, gradcam,
pretrain, demo) goes through this module, so a file is treated the same way everywhere:

- **Candidates.** Hidden files and folders (``.DS_Store``, macOS ``._*`` AppleDouble files, our
  own ``.accvit-cache``), ``Thumbs.db``, ``desktop.ini`` and ``__MACOSX`` are never inputs.
- **Opening.** :func:`open_image` decodes the whole file, applies the EXIF orientation (a portrait
  photo stored sideways is turned upright) and refuses, as "unreadable: REASON", a zero-byte file,
  a non-image, a truncated file and a decompression bomb (more pixels than
  ``PIL.Image.MAX_IMAGE_PIXELS``).
- **Symlinks.** Below a data root, a file whose resolved target lies outside the root is refused
  as "points outside the data root (to TARGET)".
- **One verdict.** :func:`image_problem` applies all of the above to one path (:func:`path_problem`
  the rules that need no decoding), so every adapter (folder, csv, ham10000, eyepacs, busi) and
  every command's inputs (predict, gradcam) get the same answer for the same file. Scans skip
  non-candidates (:func:`is_candidate_name`); listings drop them (:func:`listed_candidates`), so
  a label CSV naming ``._x.jpg`` gives the split a folder scan gives.
- **Consequences.** The caller refuses an unreadable image in one line naming it, or, where the
  command has ``--skip-bad`` (or ``split --check``), leaves it out and lists it.

:data:`POLICY_VERSION` is part of the image-cache key: a change here decodes the images again
instead of reusing pixels cached under the old policy.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageOps, UnidentifiedImageError

from accvit_med.datasets.dicom import decode_dicom, is_dicom
from accvit_med.errors import UserError

# 2: EXIF orientation applied; bombs, zero-byte and hidden files refused (1: before this module).
POLICY_VERSION = 2
CACHE_FOLDER = ".accvit-cache"
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})
NOT_AN_INPUT = "a hidden or system file, never an image input"

# We refuse bombs ourselves (with a one-line reason); Pillow's own warning would print two lines.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class UnreadableImage(UserError):
    """An image the policy refuses; ``reason`` is the short text after "unreadable: "."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{path}' (unreadable: {reason}); remove it or replace the file")

    def __reduce__(self):  # rebuilt from (path, reason) when it crosses a process boundary
        return type(self), (self.path, self.reason)


def is_candidate_name(name: str) -> bool:
    """False for names that are never images: hidden files, AppleDouble, our cache, OS debris."""
    return bool(name) and not name.startswith(".") and name.lower() not in IGNORED_NAMES


def is_candidate(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> bool:
    """True if no part of ``path`` (below ``root`` when given) is excluded by :func:`is_candidate_name`."""
    path = Path(path)
    if root is not None:
        try:
            path = path.relative_to(root)
        except ValueError:
            pass
    return all(is_candidate_name(part) for part in path.parts if part not in ("", ".", ".."))


def outside_root(path: str | os.PathLike, root: str | os.PathLike) -> Optional[str]:
    """The resolved target when ``path`` (a symlink, or under one) leaves ``root``; else None."""
    target = Path(path).resolve()
    base = Path(root).resolve()
    if target == base or base in target.parents:
        return None
    return str(target)


def open_image(path: str | os.PathLike, draft_size: Optional[int] = None) -> Image.Image:
    """Decode ``path`` fully, upright (EXIF orientation applied); raise :class:`UnreadableImage`.

    Args:
        path: the image file.
        draft_size: for JPEGs, decode at the smallest 1/2^k scale that keeps this many pixels
            per side (the decoder still reads every byte, so truncation is still caught).
    """
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImage(path, "empty file (0 bytes)")
    except FileNotFoundError:
        raise UserError(f"image '{path}' does not exist; check --data-dir or rebuild the split") from None
    except OSError as err:
        raise UnreadableImage(path, err.strerror or type(err).__name__) from None
    if is_dicom(path):  # pydicom's reader and the display pipeline (window, MONOCHROME1), in .dicom
        return decode_dicom(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > Image.MAX_IMAGE_PIXELS:
                raise UnreadableImage(path, f"decompression bomb ({width}x{height} pixels, more than "
                                            f"{Image.MAX_IMAGE_PIXELS})")
            if width < 1 or height < 1:
                raise UnreadableImage(path, "empty image (0 pixels)")
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright if upright is not image else image.copy()
    except UnreadableImage:
        raise
    except Image.DecompressionBombError:  # Pillow refuses it at open (twice its limit): same short reason
        raise UnreadableImage(path, f"decompression bomb (more than {2 * Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # Pillow's truncated/corrupt-data errors
        raise UnreadableImage(path, _first_line(err)) from None


def listed_candidates(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """``paths`` (relative to a data root, as a label file lists them) split into (kept, left out).

    A listing is held to the rule a scan applies: what a folder scan would never take as input
    (a hidden file or folder, an AppleDouble ``._*`` file, OS debris) is not a sample either.
    """
    kept, left_out = [], []
    for path in paths:
        (kept if is_candidate(path) else left_out).append(path)
    return kept, left_out


def path_problem(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> Optional[str]:
    """The rules that need no decoding: None, or why ``path`` is never an input.

    Below ``root`` every part of the path counts (``data/.trash/x.png`` is out) and a symlink
    must stay inside it; without a root (a file named on the command line) only the file's name does.
    """
    candidate = is_candidate(path, root) if root is not None else is_candidate_name(Path(path).name)
    if not candidate:
        return NOT_AN_INPUT
    if root is not None:
        target = outside_root(path, root)
        if target is not None:
            return f"points outside the data root (to {target})"
    return None


def image_problem(path: str | os.PathLike, root: Optional[str | os.PathLike] = None,
                  decode: bool = True) -> Optional[str]:
    """None if ``path`` is an input the policy accepts, else the reason ("missing file", ...).

    ``decode=False`` applies only :func:`path_problem` (for an image decoded before, e.g. cached).
    """
    problem = path_problem(path, root)
    if problem is not None or not decode:
        return problem
    try:
        open_image(path, draft_size=64)
    except UnreadableImage as err:
        return err.reason
    except UserError:
        return "missing file"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
