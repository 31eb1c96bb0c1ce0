"""EyePACS (Kaggle Diabetic Retinopathy Detection, 2015) as published.

``trainLabels.csv`` (``image,level``; or a mirror's ``trainLabels_cropped.csv`` with an extra
index column) beside an image folder (``train/``, ``resized_train/``...) of
``{patient}_{left|right}.jpeg`` (``.jpg``/``.png`` in some mirrors). Levels 0-4 are the ordinal
grades none, mild, moderate, severe, proliferative.

Group = the patient number: a patient's two eyes are strongly correlated and must stay together.
"""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd

from accvit_med.datasets.base import (
    SampleTable,
    check_data_root,
    check_labels,
    find_file,
    finish_frame,
    index_images,
    read_table,
    relative_to_root,
    require_columns,
    resolve_listed_images,
    unlisted_images,
)
from accvit_med.errors import UserError

# Clinical binary tasks (positive classes), reported at operating points chosen on validation:
# referable DR = grade >= 2, the endpoint of Gulshan et al. (JAMA 2016).
CLINICAL_TASKS = {"referable DR": ("moderate", "severe", "proliferative")}

CLASSES = ["none", "mild", "moderate", "severe", "proliferative"]
LABEL_FILES = ("trainLabels.csv", "trainLabels_cropped.csv")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def load(root: str | os.PathLike) -> SampleTable:
    root = check_data_root(root, "EyePACS")
    labels_path = find_file(root, LABEL_FILES, "EyePACS label file")
    frame = read_table(labels_path, "EyePACS label file")
    require_columns(frame, ("image", "level"), labels_path, "EyePACS label file")
    images = frame["image"].str.strip()
    levels = frame["level"].str.strip()
    check_labels(levels, [str(i) for i in range(len(CLASSES))], labels_path, "level")
    repeated = images[images.duplicated()]
    if len(repeated):
        raise UserError(f"image '{repeated.iloc[0]}' is listed twice in '{labels_path}'; remove the repeated row")
    folder = labels_path.parent
    counts: Counter = Counter()
    index = index_images(folder, IMAGE_EXTENSIONS, counts=counts)
    paths = resolve_listed_images(images, index, labels_path, f"'{folder}' and its subfolders (e.g. train/)")
    left_out = unlisted_images(index, paths, counts)
    prefix = relative_to_root(root, folder)
    table = pd.DataFrame({
        "path": [prefix + p for p in paths],
        "label": [CLASSES[int(v)] for v in levels],
        "group": images.map(patient_of),
        "eye": images.map(eye_of),
    })
    return SampleTable("eyepacs", root, finish_frame(table), list(CLASSES), ordinal=True,
                       metadata_columns=["eye"], subgroups=["eye"], left_out=left_out)


def patient_of(image: str) -> str:
    """``"10_left"`` -> ``"10"``; a name without an eye suffix is its own patient."""
    stem, _, eye = image.rpartition("_")
    return stem if stem and eye.lower() in ("left", "right") else image


def eye_of(image: str) -> str:
    """``"10_left"`` -> ``"left"``; ``"unknown"`` for a name without an eye suffix."""
    _stem, _, eye = image.rpartition("_")
    return eye.lower() if eye.lower() in ("left", "right") else "unknown"
