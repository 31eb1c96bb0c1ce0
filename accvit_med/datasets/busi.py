"""BUSI (Breast Ultrasound Images) as published: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/``.

Each image ``benign (1).png`` comes with ``benign (1)_mask.png`` and, for some lesions,
``_mask_1.png``, ``_mask_2.png``. Masks are never samples (a public result fell from 87% to 69%
once masks were taken out of its data); they are kept in the ``mask_paths`` column
(``;``-separated). BUSI has no patient ids: each image is its own group, unless near-duplicates
are clustered (``load("busi", root, dedupe=True)``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from accvit_med.datasets.base import (
    HIDDEN,
    IMAGE_EXTENSIONS,
    MASK,
    SEARCH_DEPTH,
    SampleTable,
    check_data_root,
    finish_frame,
    relative_to_root,
)
from accvit_med.datasets.imagepolicy import is_candidate_name
from accvit_med.errors import UserError

# Clinical binary task (positive classes), reported at operating points chosen on validation.
CLINICAL_TASKS = {"malignant": ("malignant",)}

CLASSES = ["benign", "malignant", "normal"]
MASK_STEM = re.compile(r"^(?P<image>.+)_mask(?:_\d+)?$", re.IGNORECASE)


def load(root: str | os.PathLike) -> SampleTable:
    root = check_data_root(root, "BUSI")
    base = _find_class_folders(root)
    rows, orphan_masks, hidden, n_masks = [], 0, 0, 0
    for label in CLASSES:
        folder = _child(base, label)
        images: dict[str, str] = {}
        masks: dict[str, list[str]] = {}
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            stem, ext = os.path.splitext(entry.name)
            if not entry.is_file() or ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if not is_candidate_name(entry.name):
                hidden += 1
                continue
            rel = relative_to_root(root, folder) + entry.name
            mask = MASK_STEM.match(stem)
            if mask:
                masks.setdefault(mask.group("image"), []).append(rel)
            else:
                images[stem] = rel
        orphan_masks += sum(len(v) for k, v in masks.items() if k not in images)
        n_masks += sum(len(v) for v in masks.values())
        for stem, rel in images.items():
            rows.append((rel, label, rel, ";".join(_natural(masks.get(stem, [])))))
    notes = [f"{orphan_masks} mask file(s) without their image were ignored"] if orphan_masks else []
    frame = pd.DataFrame(rows, columns=["path", "label", "group", "mask_paths"])
    left_out = {reason: n for reason, n in ((HIDDEN, hidden), (MASK, n_masks)) if n}
    return SampleTable("busi", root, finish_frame(frame), list(CLASSES), has_groups=False, notes=notes,
                       left_out=left_out)


def _child(folder: Path, name: str) -> Path:
    """The subfolder ``name`` of ``folder``, whatever its case (Benign/ in some re-uploads)."""
    for entry in os.scandir(folder):
        if entry.is_dir() and entry.name.lower() == name:
            return Path(entry.path)
    raise FileNotFoundError(name)


def _has_classes(folder: Path) -> bool:
    try:
        names = {e.name.lower() for e in os.scandir(folder) if e.is_dir()}
    except OSError:
        return False
    return set(CLASSES) <= names


def _find_class_folders(root: Path) -> Path:
    """The shallowest folder holding benign/, malignant/ and normal/ (Dataset_BUSI_with_GT)."""
    level = [root]
    for _depth in range(SEARCH_DEPTH + 1):
        found = sorted(p for p in level if _has_classes(p))
        if found:
            return found[0]
        level = sorted(
            Path(e.path) for p in level for e in os.scandir(p)
            if e.is_dir() and is_candidate_name(e.name)
        )
    raise UserError(
        f"BUSI layout not found in '{root}': expected Dataset_BUSI_with_GT/ with benign/, "
        "malignant/ and normal/ inside; check --data-dir"
    )


def _natural(paths: list[str]) -> list[str]:
    """``_mask`` before ``_mask_1`` before ``_mask_10``."""
    return sorted(paths, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)])
