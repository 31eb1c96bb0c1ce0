"""ISIC 2019 (Task 1 training set) as published: a natural external test set for HAM10000 models.

* ``ISIC_2019_Training_Input/*.jpg`` (25,331 images; some MSK images carry a ``_downsampled``
  suffix, which the ground truth may or may not repeat);
* ``ISIC_2019_Training_GroundTruth.csv``: ``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``, one-hot
  floats (UNK is 0 throughout the training set);
* ``ISIC_2019_Training_Metadata.csv``: ``image,age_approx,anatom_site_general,lesion_id,sex``.

Group = ``lesion_id`` (the image where it is empty). The classes keep ISIC's names; the map to
HAM10000's is :data:`HAM10000_CLASS_MAP` (AK is akiec; SCC has no HAM10000 class). ISIC 2019
*contains* HAM10000 (same ``ISIC_`` ids, same ``HAM_`` lesion ids), which external evaluation of a
HAM10000 run must leave out (``accvit_med.training.external_overlap``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from accvit_med.datasets.base import (
    SampleTable,
    check_data_root,
    find_file,
    finish_frame,
    index_images,
    read_table,
    require_columns,
    unlisted_images,
)
from accvit_med.errors import UserError

ONEHOT_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGE_EXTENSIONS = (".jpg", ".jpeg")
DOWNSAMPLED = "_downsampled"
SUBGROUPS = ("age_approx", "sex", "anatom_site_general")
# ISIC 2019 class -> HAM10000 class (None: HAM10000 has no such class).
HAM10000_CLASS_MAP = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df",
                      "VASC": "vasc", "SCC": None, "UNK": None}
DEFAULT_CLASS_MAPS = {"ham10000": HAM10000_CLASS_MAP}


def isic_id(name: str) -> str:
    """The ISIC image id of a file name or listed image: ``ISIC_0000001_downsampled.jpg`` -> ``ISIC_0000001``."""
    stem = Path(str(name)).name
    stem = stem.rsplit(".", 1)[0] if stem.lower().endswith(IMAGE_EXTENSIONS) else stem
    return stem[: -len(DOWNSAMPLED)] if stem.endswith(DOWNSAMPLED) else stem


def load(root: str | os.PathLike) -> SampleTable:
    root = check_data_root(root, "ISIC 2019")
    try:
        truth_path = find_file(root, [TRUTH], "ISIC 2019 ground truth")
    except UserError:
        raise UserError(
            f"ISIC 2019 layout not found in '{root}': expected {TRUTH} with ISIC_2019_Training_Input/; "
            "check --data-dir"
        ) from None
    truth = read_table(truth_path, "ISIC 2019 ground truth")
    require_columns(truth, ("image", *ONEHOT_COLUMNS[:-1]), truth_path, "ISIC 2019 ground truth")
    columns = [c for c in ONEHOT_COLUMNS if c in truth.columns]
    try:
        onehot = truth[columns].astype(float)
    except ValueError:
        raise UserError(f"ISIC 2019 ground truth '{truth_path}' has non-numeric class cells; re-download it") from None
    not_onehot = ~((onehot == 1.0).sum(axis=1).eq(1) & onehot.isin([0.0, 1.0]).all(axis=1))
    if not_onehot.any():
        raise UserError(
            f"{int(not_onehot.sum())} row(s) of '{truth_path}' are not one-hot (one 1.0, rest 0.0), e.g. "
            f"image '{truth.loc[not_onehot.idxmax(), 'image']}'; fix or remove them"
        )
    images = truth["image"].str.strip()
    ids = images.map(isic_id)
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise UserError(f"image '{repeated.iloc[0]}' is listed twice in '{truth_path}'; remove the repeated row")
    labels = [columns[i] for i in onehot.to_numpy().argmax(axis=1)]
    counts: Counter = Counter()
    index = index_images(root, IMAGE_EXTENSIONS, counts=counts)
    by_id = {}
    for stem, rel in index.items():
        by_id.setdefault(isic_id(stem), rel)
    paths = [index.get(image) or by_id.get(isic_id(image)) for image in images]
    missing = [image for image, path in zip(images, paths) if path is None]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in '{truth_path.name}' do not exist, e.g. '{missing[0]}' "
            f"(looked under '{root}'); complete the download or remove those rows"
        )
    table = pd.DataFrame({"path": paths, "label": labels, "group": ids})
    notes, present = [], []
    try:
        metadata_path = find_file(root, [METADATA], "ISIC 2019 metadata")
    except UserError:
        notes.append(f"no {METADATA} found: each image is its own group, no subgroup metadata")
    else:
        table, present = _with_metadata(table, ids, metadata_path)
    classes = [c for c in columns if c != "UNK" or "UNK" in labels]
    return SampleTable("isic2019", root, finish_frame(table), classes, has_groups=bool(present), notes=notes,
                       metadata_columns=present, subgroups=[c for c in SUBGROUPS if c in present],
                       left_out=unlisted_images(index, paths, counts))


def _with_metadata(table: pd.DataFrame, ids: pd.Series, path: Path) -> tuple[pd.DataFrame, list[str]]:
    metadata = read_table(path, "ISIC 2019 metadata")
    require_columns(metadata, ("image", "lesion_id"), path, "ISIC 2019 metadata")
    metadata = metadata.apply(lambda column: column.str.strip())
    metadata.index = metadata["image"].map(isic_id)
    metadata = metadata[~metadata.index.duplicated()]
    lesion = ids.map(metadata["lesion_id"]).fillna("")
    table["group"] = lesion.where(lesion != "", ids)
    present = [c for c in SUBGROUPS if c in metadata.columns]
    for column in present:
        table[column] = ids.map(metadata[column]).fillna("").to_numpy()
    return table, present


__all__ = ["DEFAULT_CLASS_MAPS", "HAM10000_CLASS_MAP", "isic_id", "load"]
