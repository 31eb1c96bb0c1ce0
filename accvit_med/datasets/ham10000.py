"""HAM10000 as published (Kaggle / Harvard Dataverse), and its ISIC 2018 Task 3 copy.

* ``HAM10000_metadata.csv`` (or Dataverse's tab-separated ``HAM10000_metadata.tab``, with an
  8th column ``dataset``) + ``HAM10000_images_part_1/`` and ``_part_2/``. Images are found by
  ``image_id`` in any subfolder; mirrors with a second copy of a folder count each image once.
* ISIC 2018 Task 3: ``ISIC2018_Task3_Training_GroundTruth.csv`` (one-hot ``"1.0"/"0.0"``
  columns MEL,NV,BCC,AKIEC,BKL,DF,VASC) + ``ISIC2018_Task3_Training_Input/``; lesion ids from
  ``ISIC2018_Task3_Training_LesionGroupings.csv`` when present.

Group = ``lesion_id``: 2,545 of the 10,015 images are further photos of a lesion already in the
set, and an image-level split scatters them over train and test.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

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

# Clinical binary tasks (positive classes), reported at operating points chosen on validation.
CLINICAL_TASKS = {"melanoma": ("mel",), "malignant": ("mel", "bcc", "akiec")}

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
ISIC_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
IMAGE_EXTENSIONS = (".jpg", ".jpeg")
# Subgroup metadata of HAM10000_metadata.csv kept in the split by default; Dataverse's 8th column
# ``dataset`` (the source collection) may be asked for with --subgroups.
SUBGROUPS = ("age", "sex", "localization", "dx_type")
OPTIONAL_METADATA = ("dataset",)


def load(root: str | os.PathLike) -> SampleTable:
    root = check_data_root(root, "HAM10000")
    try:
        metadata = find_file(root, METADATA_NAMES, "HAM10000 metadata")
    except UserError:
        try:
            truth = find_file(root, [ISIC_TRUTH], "ISIC 2018 ground truth")
        except UserError:
            raise UserError(
                f"HAM10000 layout not found in '{root}': expected HAM10000_metadata.csv (or .tab) "
                f"with HAM10000_images_part_1/, or {ISIC_TRUTH} with ISIC2018_Task3_Training_Input/; "
                "check --data-dir"
            ) from None
        return _load_isic2018(root, truth)
    return _load_metadata(root, metadata)


def _load_metadata(root: Path, metadata: Path) -> SampleTable:
    frame = read_table(metadata, "HAM10000 metadata", sep="\t" if metadata.suffix == ".tab" else ",")
    require_columns(frame, ("lesion_id", "image_id", "dx"), metadata, "HAM10000 metadata")
    frame = frame.apply(lambda column: column.str.strip())
    check_labels(frame["dx"], CLASSES, metadata, "dx")
    _reject_repeated_ids(frame["image_id"], metadata)
    folder = metadata.parent
    counts: Counter = Counter()
    index = index_images(folder, IMAGE_EXTENSIONS, counts=counts)
    paths = resolve_listed_images(frame["image_id"], index, metadata, f"'{folder}' and its subfolders")
    left_out = unlisted_images(index, paths, counts)
    prefix = relative_to_root(root, folder)
    # A row without lesion_id is its own lesion.
    group = frame["lesion_id"].where(frame["lesion_id"] != "", frame["image_id"])
    table = pd.DataFrame({"path": [prefix + p for p in paths], "label": frame["dx"], "group": group})
    present = [c for c in (*SUBGROUPS, *OPTIONAL_METADATA) if c in frame.columns]
    for column in present:
        table[column] = frame[column]
    return SampleTable("ham10000", root, finish_frame(table), list(CLASSES), metadata_columns=present,
                       subgroups=[c for c in SUBGROUPS if c in present], left_out=left_out)


def _load_isic2018(root: Path, truth: Path) -> SampleTable:
    frame = read_table(truth, "ISIC 2018 ground truth")
    onehot_columns = [c.upper() for c in CLASSES]
    require_columns(frame, ["image", *onehot_columns], truth, "ISIC 2018 ground truth")
    try:
        onehot = frame[onehot_columns].astype(float)
    except ValueError:
        raise UserError(f"ISIC 2018 ground truth '{truth}' has non-numeric class cells; re-download it") from None
    not_onehot = ~((onehot == 1.0).sum(axis=1).eq(1) & onehot.isin([0.0, 1.0]).all(axis=1))
    if not_onehot.any():
        image = frame.loc[not_onehot.idxmax(), "image"]
        raise UserError(
            f"{int(not_onehot.sum())} row(s) of '{truth}' are not one-hot (one 1.0, rest 0.0), e.g. "
            f"image '{image}'; fix or remove them"
        )
    images = frame["image"].str.strip()
    _reject_repeated_ids(images, truth)
    labels = onehot.to_numpy().argmax(axis=1)
    counts: Counter = Counter()
    index = index_images(root, IMAGE_EXTENSIONS, counts=counts)
    paths = resolve_listed_images(images, index, truth, f"'{root}' and its subfolders")
    left_out = unlisted_images(index, paths, counts)
    notes = []
    try:
        groupings_path = find_file(root, [ISIC_GROUPINGS], "ISIC 2018 lesion groupings")
    except UserError:
        groups, has_groups = images, False
        notes.append(f"no {ISIC_GROUPINGS} found: each image is its own group (lesions may straddle splits)")
    else:
        groupings = read_table(groupings_path, "ISIC 2018 lesion groupings")
        require_columns(groupings, ("image", "lesion_id"), groupings_path, "ISIC 2018 lesion groupings")
        lesion_of = dict(zip(groupings["image"].str.strip(), groupings["lesion_id"].str.strip()))
        groups = images.map(lambda image: lesion_of.get(image) or image)
        has_groups = True
    table = pd.DataFrame({"path": paths, "label": [CLASSES[i] for i in labels], "group": groups})
    return SampleTable("ham10000", root, finish_frame(table), list(CLASSES), has_groups=has_groups, notes=notes,
                       left_out=left_out)


def _reject_repeated_ids(ids: pd.Series, listing: Path) -> None:
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise UserError(
            f"image '{repeated.iloc[0]}' is listed {int((ids == repeated.iloc[0]).sum())} times in "
            f"'{listing}'; remove the repeated rows"
        )
