"""What every dataset adapter shares: the sample table and the tools to find a layout on disk.

An adapter turns a folder *as it was published* into a :class:`SampleTable`: one row per image
with its ``path`` (relative to the data root, POSIX separators), ``label`` (class name) and
``group`` (the unit that must not straddle splits: a lesion, a patient, an image).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from accvit_med.datasets.imagepolicy import is_candidate_name
from accvit_med.errors import UserError

REQUIRED_COLUMNS = ("path", "label", "group")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
# Deep enough for "download/Dataset_BUSI_with_GT/benign/x.png" and ISIC's nested zips, shallow
# enough that pointing at a home folder by mistake fails fast instead of walking the disk.
SEARCH_DEPTH = 3
# Why an image file found under the data root is not a sample (the keys of SampleTable.left_out and
# of the split manifest's "left_out"), in the order a flow diagram lists them.
HIDDEN, DUPLICATE_COPY, UNLISTED, MASK, UNREADABLE = (
    "hidden files", "duplicate copies", "not in the label file", "masks", "unreadable")
LEFT_OUT_REASONS = (HIDDEN, DUPLICATE_COPY, UNLISTED, MASK, UNREADABLE)


@dataclass
class SampleTable:
    """One dataset as a table: ``frame`` has columns path, label, group (+ adapter extras)."""

    name: str
    root: Path
    frame: pd.DataFrame
    classes: list[str]
    ordinal: bool = False
    # False when every group is a single image (folder/csv without groups, BUSI without
    # --dedupe): the split can then be exact at image level.
    has_groups: bool = True
    notes: list[str] = field(default_factory=list)
    # Metadata columns of ``frame`` (age, sex, eye...) that a split may keep for subgroup analysis,
    # and those it keeps unless told otherwise.
    metadata_columns: list[str] = field(default_factory=list)
    subgroups: list[str] = field(default_factory=list)
    # Image files found under the root that are not samples, counted by reason (LEFT_OUT_REASONS).
    left_out: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"sample table lacks columns {missing}")
        unknown = sorted(set(self.frame["label"]) - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among classes {self.classes}")

    def __len__(self) -> int:
        return len(self.frame)


def check_data_root(root: str | os.PathLike, dataset: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data folder '{root}' not found; unpack the {dataset} download there or pass --data-dir"
        )
    return root.resolve()


def walk_files(
    root: Path, max_depth: int, skipped: Optional[Counter] = None
) -> Iterable[tuple[str, os.DirEntry]]:
    """Yield (relative POSIX path, entry) for every file below ``root``, breadth first, sorted.

    What the image policy never takes as input (hidden and AppleDouble files, ``__MACOSX``,
    ``Thumbs.db``, our cache folder) is skipped; ``skipped[HIDDEN]`` counts the skipped files
    named like images (``._ISIC_0024306.jpg``), so the data flow can say how many there were.
    """
    level = [("", root)]
    for depth in range(max_depth + 1):
        next_level = []
        for rel_dir, directory in level:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except (PermissionError, NotADirectoryError):
                continue
            for entry in entries:
                if not is_candidate_name(entry.name):
                    if skipped is not None and _image_named(entry.name) and not entry.is_dir():
                        skipped[HIDDEN] += 1
                    continue
                rel = f"{rel_dir}{entry.name}"
                if entry.is_dir():
                    if depth < max_depth:
                        next_level.append((rel + "/", entry.path))
                else:
                    yield rel, entry
        level = next_level


def _image_named(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_file(root: Path, names: Iterable[str], what: str, max_depth: int = SEARCH_DEPTH) -> Path:
    """The shallowest file below ``root`` whose name is one of ``names`` (first name wins)."""
    names = list(names)
    lowered = {n.lower(): i for i, n in enumerate(names)}
    best: tuple[int, int, str] | None = None
    for rel, entry in walk_files(root, max_depth):
        depth = rel.count("/")
        if best is not None and depth > best[0]:
            break  # breadth first: nothing deeper can beat a match found higher up
        rank = lowered.get(entry.name.lower())
        if rank is None:
            continue
        key = (depth, rank, rel)
        if best is None or key < best:
            best = key
    if best is None:
        raise UserError(
            f"{what} not found in '{root}' (looked for {' or '.join(names)} up to "
            f"{max_depth} folders deep); check --data-dir"
        )
    return root / best[2]


def index_images(
    root: Path,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    max_depth: int = SEARCH_DEPTH,
    counts: Optional[Counter] = None,
) -> dict[str, str]:
    """Map each image's file stem to one file below ``root``.

    One directory scan instead of a stat per listed image keeps 35k-row label files fast. Mirrors
    often carry a second copy of a folder: the shallowest, then alphabetically first, copy wins,
    so each image is counted once and the choice does not depend on the file system's order.
    ``counts`` (when given) receives the hidden files and the further copies passed over.
    """
    extensions = tuple(e.lower() for e in extensions)
    index: dict[str, str] = {}
    for rel, entry in walk_files(root, max_depth, counts):
        stem, dot, ext = entry.name.rpartition(".")
        if not dot or f".{ext.lower()}" not in extensions:
            continue
        # walk_files yields shallow files first and each level sorted, so the first seen wins.
        if stem not in index:
            index[stem] = rel
        elif counts is not None:
            counts[DUPLICATE_COPY] += 1
    return index


def unlisted_images(index: dict[str, str], listed: Iterable[str], counts: Counter) -> dict[str, int]:
    """``counts`` plus the indexed images the label file does not list, as a plain dict."""
    missing = len(set(index.values()) - set(listed))
    if missing:
        counts[UNLISTED] += missing
    return {reason: int(counts[reason]) for reason in LEFT_OUT_REASONS if counts.get(reason)}


def relative_to_root(root: Path, folder: Path) -> str:
    rel = folder.relative_to(root).as_posix()
    return "" if rel == "." else rel + "/"


def read_table(path: Path, what: str, sep: str = ",") -> pd.DataFrame:
    """Read a label file as strings (no NaN guessing), with one-line errors for broken files."""
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise UserError(f"{what} '{path}' is empty; re-download or re-create it") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{what} '{path}' is not a valid CSV ({first}); re-download or fix it") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(
            f"{what} '{path}' lacks column(s) {', '.join(missing)} (found: "
            f"{', '.join(map(str, frame.columns)) or 'none'}); is this the right file?"
        )


def check_labels(values: pd.Series, allowed: Iterable[str], path: Path, column: str) -> None:
    allowed = set(allowed)
    bad = sorted(set(values) - allowed)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5])
        raise UserError(
            f"unknown label(s) {shown} in column '{column}' of '{path}'; expected one of "
            f"{', '.join(sorted(allowed))}"
        )


def resolve_listed_images(ids: pd.Series, index: dict[str, str], listing: Path, where: str) -> list[str]:
    """Relative paths of the listed image ids; a missing image is a UserError."""
    ids = ids.tolist()
    paths = [index.get(image_id) for image_id in ids]
    missing = [image_id for image_id, path in zip(ids, paths) if path is None]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in '{listing.name}' do not exist, e.g. "
            f"'{missing[0]}' (looked under {where}); complete the download or remove those rows"
        )
    return paths


def finish_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by path and reset the index, so a table never depends on listing order."""
    columns = list(REQUIRED_COLUMNS) + [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    return frame[columns].sort_values("path", kind="stable").reset_index(drop=True)
