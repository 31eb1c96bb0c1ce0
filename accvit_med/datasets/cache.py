"""Decode an image once at training size, and optionally keep the result on disk.

EyePACS photographs are several megapixels; decoding and resizing them every epoch dominates
training time. :func:`decode_resized` decodes straight to about twice the target size (JPEG draft
mode, which the decoder does almost for free) and applies the fixed geometry of
:func:`accvit_med.datasets.transforms.resize_and_center_crop`. :class:`ImageCache` stores that
result as a lossless PNG keyed by the source's path, size, modification and change times, the target
size and the image policy's version, so a changed or replaced image is decoded again (even one of the
same byte size whose modification time was set back) and a cached run sees the pixels an uncached run
sees. Default location: ``<data root>/.accvit-cache/<size>/``.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from accvit_med.datasets.dicom import cache_tag
from accvit_med.datasets.imagepolicy import CACHE_FOLDER, POLICY_VERSION, UnreadableImage, open_image, path_problem
from accvit_med.datasets.transforms import GEOMETRY_VERSION, resize_and_center_crop
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_bytes


def _to_rgb(image: Image.Image) -> Image.Image:
    # 16/32-bit grayscale (some ultrasound exports) would be clipped by convert("RGB"): rescale.
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_resized(path: str | os.PathLike, size: int) -> Image.Image:
    """Decode ``path`` upright as RGB at ``size x size``; an unreadable file is a UserError naming it."""
    # JPEG only: decode at the smallest 1/2^k scale that still keeps 2x the target size.
    return resize_and_center_crop(_to_rgb(open_image(path, draft_size=2 * size)), size)


def default_cache_dir(data_root: str | os.PathLike) -> Path:
    return Path(data_root) / CACHE_FOLDER


class ImageCache:
    """Resized images on disk under ``folder/<size>/``; missing entries are made on first use."""

    def __init__(self, folder: str | os.PathLike, size: int):
        self.folder = Path(folder) / str(size)
        self.size = size

    def entry(self, source: str | os.PathLike) -> Path:
        source = Path(source).resolve()
        try:
            stat = source.stat()
        except FileNotFoundError:
            raise UserError(f"image '{source}' does not exist; check --data-dir or rebuild the split") from None
        # The change time too: a file rewritten with as many bytes and its modification time set
        # back (os.utime, `touch -r`, some sync tools) has new pixels under the same size and
        # mtime, but the kernel sets st_ctime on every write and no call sets it back.
        key = (f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{self.size}|{GEOMETRY_VERSION}"
               f"|policy{POLICY_VERSION}"
               + cache_tag(source))  # a DICOM file under another --dicom-window has other pixels
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png"

    def load(self, source: str | os.PathLike) -> Image.Image:
        entry = self.entry(source)
        if entry.exists():
            with Image.open(entry) as cached:
                return cached.convert("RGB")
        image = decode_resized(source, self.size)
        self.store(entry, image)
        return image

    def ensure(self, source: str | os.PathLike) -> bool:
        """Create the entry for ``source`` if missing; return True if it had to be made."""
        entry = self.entry(source)
        if entry.exists():
            return False
        self.store(entry, decode_resized(source, self.size))
        return True

    @staticmethod
    def store(entry: Path, image: Image.Image) -> None:
        buffer = io.BytesIO()
        # compress_level 1: a 224 px PNG still decodes in about a millisecond and writes fast.
        image.save(buffer, format="PNG", compress_level=1)
        # Atomic, so parallel data-loader workers and a killed run never leave a broken entry.
        atomic_write_bytes(entry, buffer.getvalue())


def _ensure_one(args: tuple[str, str, int]) -> bool:
    folder, source, size = args
    return ImageCache(folder, size).ensure(source)


def fill_cache(
    root: str | os.PathLike,
    paths: Sequence[str],
    size: int,
    cache_dir: Optional[str | os.PathLike] = None,
    workers: int = 1,
    on_image: Optional[Callable[[], None]] = None,
) -> tuple[int, Path]:
    """Make every missing entry for ``paths`` (relative to ``root``); returns (how many made, folder)."""
    root = Path(root)
    for path in paths:  # the policy's rules on paths (symlinks leaving the root...); decoding checks the rest
        problem = path_problem(root / path, root)
        if problem is not None:
            raise UnreadableImage(root / path, problem)
    folder = Path(cache_dir) if cache_dir else default_cache_dir(root)
    jobs = [(str(folder), str(root / p), size) for p in paths]
    made = 0
    if workers <= 1:
        results: Iterable[bool] = map(_ensure_one, jobs)
        for created in results:
            made += int(created)
            if on_image:
                on_image()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for created in pool.map(_ensure_one, jobs, chunksize=8):
                made += int(created)
                if on_image:
                    on_image()
    return made, ImageCache(folder, size).folder
