"""A user's own images, one folder per class (torchvision's ImageFolder layout).

Class names are the folder names, sorted. Every image is its own group.
"""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd

from accvit_med.datasets.base import (
    IMAGE_EXTENSIONS,
    SampleTable,
    check_data_root,
    finish_frame,
    walk_files,
)
from accvit_med.datasets.imagepolicy import is_candidate_name
from accvit_med.errors import UserError

# Class folders may have their own subfolders (per patient, per scanner...).
CLASS_DEPTH = 4


def load(root: str | os.PathLike) -> SampleTable:
    root = check_data_root(root, "image-folder")
    rows = []
    class_dirs = sorted(
        (e for e in os.scandir(root) if e.is_dir() and is_candidate_name(e.name)),
        key=lambda e: e.name,
    )
    classes = []
    skipped: Counter = Counter()
    for entry in class_dirs:
        images = [
            f"{entry.name}/{rel}"
            for rel, file in walk_files(root / entry.name, CLASS_DEPTH, skipped)
            if os.path.splitext(file.name)[1].lower() in IMAGE_EXTENSIONS
        ]
        if images:
            classes.append(entry.name)
            rows.extend((path, entry.name, path) for path in images)
    if len(classes) < 2:
        raise UserError(
            f"'{root}' holds {len(classes)} class folder(s) with images; the folder layout needs one "
            "subfolder per class (at least two), e.g. <data-dir>/benign/*.png, <data-dir>/malignant/*.png"
        )
    frame = pd.DataFrame(rows, columns=["path", "label", "group"])
    return SampleTable("folder", root, finish_frame(frame), classes, has_groups=False, left_out=dict(skipped))
