"""K-fold cross-validation as K ordinary split files and one manifest of the whole CV.

In fold k the test part is the k-th of K stratified parts (group-aware: scikit-learn's
``StratifiedGroupKFold(n_splits=K, shuffle=True, random_state=seed)`` on the groups; per image:
``StratifiedKFold``), val is a stratified share (``val_fraction``) of the rest, group-aware by the
project's own splitter (:func:`accvit_med.datasets.splits.assign_parts`), and train the remainder.
Every image is in exactly one fold's test part and no group straddles two parts of any fold.

Files, in one folder (default ``splits/<dataset>-<K>fold/``): ``fold1.csv`` ... ``foldK.csv``, each
with its ordinary manifest (``fold1.json`` ...: ``finetune`` and every other command take a fold file
as any split), and ``cv.json``, which lists each fold's file, sha256, counts and leakage audit. Rows
are sorted by path before anything is drawn, so equal inputs and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from accvit_med import __version__
from accvit_med.datasets.base import REQUIRED_COLUMNS, SampleTable
from accvit_med.datasets.splits import SPLITS, assign_parts, write_split
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, sha256_file

CV_MANIFEST = "cv.json"
CV_KIND = "accvit-med cross-validation"
DEFAULT_VAL_FRACTION = 0.2


def default_cv_dir(dataset: str, k: int) -> Path:
    """``splits/<dataset>-<K>fold/``, relative to the working directory."""
    return Path("splits") / f"{dataset}-{k}fold"


def fold_file(fold: int) -> str:
    """The split file of fold ``fold`` (1-based) inside a CV folder."""
    return f"fold{fold}.csv"


def check_fold_options(k: int, val_fraction: float) -> None:
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must lie strictly between 0 and 1, got {val_fraction:g}")


def assign_test_folds(table: SampleTable, k: int, seed: int, grouped: bool) -> np.ndarray:
    """The test fold (0-based) of each row of ``table.frame``, in its row order."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    frame = table.frame.reset_index(drop=True)
    labels = pd.Categorical(frame["label"], categories=table.classes).codes
    if grouped:
        groups, _ = pd.factorize(frame["group"], sort=True)
        per_class = pd.DataFrame({"c": labels, "g": groups}).drop_duplicates().groupby("c").size()
        unit, hint = "group(s)", "lower --folds or use --no-group"
    else:
        groups = None
        per_class = pd.Series(labels).value_counts()
        unit, hint = "image(s)", "lower --folds"
    counts = {c: int(per_class.get(i, 0)) for i, c in enumerate(table.classes)}
    smallest = min(counts, key=lambda c: (counts[c], table.classes.index(c)))
    if counts[smallest] < k:
        raise UserError(f"--folds {k} is more than the {counts[smallest]} {unit} of class '{smallest}' of "
                        f"{table.name}; every class needs at least one per test fold: {hint}")
    splitter = (StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed) if grouped
                else StratifiedKFold(n_splits=k, shuffle=True, random_state=seed))
    fold = np.full(len(frame), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test) in enumerate(splitter.split(np.zeros(len(frame)), labels, groups)):
            fold[test] = i
    if (fold < 0).any() or len(np.unique(fold)) != k:
        raise RuntimeError("internal error: the fold assignment leaves an image out or a fold empty")
    for i in range(k):
        missing = [c for j, c in enumerate(table.classes) if not (labels[fold == i] == j).any()]
        if missing:
            raise UserError(f"the test part of fold {i + 1} of {k} has no image of class '{missing[0]}' "
                            f"({counts[missing[0]]} {unit} in all); {hint}")
    return fold


def make_folds(table: SampleTable, k: int, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 42,
               grouped: bool = True) -> list[pd.DataFrame]:
    """K split frames (the table's columns plus ``split``), fold 1 first, rows by split then path."""
    check_fold_options(k, val_fraction)
    frame = table.frame.sort_values("path", kind="stable").reset_index(drop=True)
    table = replace(table, frame=frame)
    fold = assign_test_folds(table, k, seed, grouped)
    parts = np.asarray(SPLITS, dtype=object)
    frames = []
    for i in range(k):
        test = fold == i
        rest = replace(table, frame=frame[~test].reset_index(drop=True))
        try:
            inner = assign_parts(rest, (1 - val_fraction, val_fraction), seed, grouped)
        except UserError as err:
            message = str(err).replace("change --ratios", "change --val-fraction or --folds")
            raise UserError(f"fold {i + 1} of {k}, outside its test part: {message}") from None
        assignment = np.full(len(frame), SPLITS.index("test"), dtype=np.int64)
        assignment[~test] = inner
        result = frame.copy()
        result.insert(len(REQUIRED_COLUMNS), "split", parts[assignment])
        order = np.lexsort((result["path"].to_numpy(), assignment))
        frames.append(result.iloc[order].reset_index(drop=True))
    return frames


def fold_ratios(k: int, val_fraction: float) -> dict[str, float]:
    """Each part's expected share of all images in one fold."""
    rest = (k - 1) / k
    return {"train": rest * (1 - val_fraction), "val": rest * val_fraction, "test": 1 / k}


def write_folds(frames: Sequence[pd.DataFrame], manifest: dict, audits: Sequence[dict], out_dir: Path,
                val_fraction: float) -> dict:
    """Write every fold's split file and manifest, then ``cv.json`` (returned); equal inputs, equal bytes.

    ``manifest`` is what every fold's manifest shares (dataset, data_root, classes, protocol, seed...);
    ``audits`` the leakage audit of each fold, as its manifest records it.
    """
    k = len(frames)
    folds = []
    for i, (frame, audit) in enumerate(zip(frames, audits)):
        fold_manifest = dict(manifest, ratios=fold_ratios(k, val_fraction), audit=audit,
                             cv={"k": k, "fold": i + 1, "manifest": CV_MANIFEST, "val_fraction": val_fraction})
        written = write_split(frame, fold_manifest, out_dir / fold_file(i + 1))
        folds.append({"fold": i + 1, "split": fold_file(i + 1), "csv_sha256": written["csv_sha256"],
                      "counts": written["counts"], "audit": audit})
    from sklearn import __version__ as sklearn_version

    grouped = bool(manifest["grouped"])
    cv = {
        "kind": CV_KIND,
        **{key: manifest[key] for key in ("dataset", "data_root", "protocol", "seed", "grouped", "dedupe",
                                          "classes", "ordinal") if key in manifest},
        "k": k,
        "val_fraction": val_fraction,
        "assigner": f"scikit-learn {sklearn_version} "
                    f"{'StratifiedGroupKFold' if grouped else 'StratifiedKFold'}(shuffle=True, random_state=seed)",
        "n_samples": int(len(frames[0])),
        "folds": folds,
        "tool_version": __version__,
    }
    atomic_write_json(out_dir / CV_MANIFEST, cv)
    return cv


def read_cv(path: str | os.PathLike) -> dict:
    """A ``cv.json`` read and checked: every fold file exists and has the sha256 it lists."""
    path = Path(path)
    try:
        cv = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"cross-validation manifest '{path}' not found; "
                        "write it with accvit-med split --folds K") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(f"'{path}' is not a readable cross-validation manifest; re-create it with "
                        "accvit-med split --folds K") from None
    if not isinstance(cv, dict) or cv.get("kind") != CV_KIND or not isinstance(cv.get("folds"), list):
        raise UserError(f"'{path}' is not a cross-validation manifest written by accvit-med split --folds K")
    for entry in cv["folds"]:
        csv_path = path.parent / entry["split"]
        if not csv_path.is_file() or sha256_file(csv_path) != entry["csv_sha256"]:
            raise UserError(f"fold file '{csv_path}' of '{path}' is missing or was edited (sha256 differs); "
                            "re-create the folds with accvit-med split --folds K")
    return cv


def fold_paths(cv_path: str | os.PathLike) -> list[Path]:
    """The split files of a CV manifest, fold 1 first."""
    cv_path = Path(cv_path)
    return [cv_path.parent / entry["split"] for entry in read_cv(cv_path)["folds"]]


def fold_of_split(csv_path: Optional[str | os.PathLike], sha256: str) -> Optional[tuple[Path, dict, int]]:
    """(the cv.json beside ``csv_path``, its content, the fold number) when the split file whose
    sha256 is ``sha256`` is one of its folds; None otherwise (also when nothing is readable)."""
    if csv_path is None:
        return None
    cv_path = Path(csv_path).parent / CV_MANIFEST
    try:
        cv = json.loads(cv_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(cv, dict) or cv.get("kind") != CV_KIND:
        return None
    for entry in cv.get("folds", []):
        if isinstance(entry, dict) and entry.get("csv_sha256") == sha256:
            return cv_path, cv, int(entry["fold"])
    return None
