"""Stratified train/val/test splits, group-aware by default, and the split file format.

A split is a CSV (``path,label,group,split`` + extras) with a JSON manifest beside it
(``splits/ham10000.csv`` + ``splits/ham10000.json``). The manifest is the one source of truth for
class order; it carries the CSV's sha256 so a later stage can tell an edited file.

Two algorithms:

* Image level (``grouped=False``, or a dataset whose groups are single images): per class, a seeded
  permutation cut at counts from the largest-remainder method, so each split's class count is
  within one sample of ``ratio * n_class``. This is the paper's protocol.
* Group level (default where groups exist): whole groups are assigned greedily, largest first
  (seeded shuffle among equal sizes), each to the split whose per-class targets it fits best
  (least increase of the squared, target-normalised excess). A group's rows are weighed by all
  their labels jointly, which is how an EyePACS patient with one mild and one severe eye is placed.
  No group can straddle splits; class counts are close to target, not exact.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from accvit_med import __version__
from accvit_med.datasets.base import REQUIRED_COLUMNS, SampleTable
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, atomic_write_text

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = (*REQUIRED_COLUMNS, "split")
DEFAULT_RATIOS = (0.6, 0.2, 0.2)
DEFAULT_SEED = 42


def default_split_path(dataset: str) -> Path:
    """``splits/<dataset>.csv``, relative to the working directory (the manifest sits beside it)."""
    return Path("splits") / f"{dataset}.csv"


def manifest_path(csv_path: str | os.PathLike) -> Path:
    return Path(csv_path).with_suffix(".json")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"60,20,20"`` or ``"0.6,0.2,0.2"`` -> fractions summing to one."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != len(SPLITS) or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(
            f"--ratios '{text}' is not three positive numbers for train,val,test; e.g. --ratios 60,20,20"
        )
    return normalise_ratios(values)


def normalise_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != len(SPLITS) or min(ratios) <= 0:
        raise UserError(f"ratios {list(ratios)} must be three positive numbers (train, val, test)")
    total = float(sum(ratios))
    return tuple(float(r) / total for r in ratios)  # type: ignore[return-value]


def class_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` samples by ``ratios``: each count within one of ``ratio * n``, none empty.

    Largest remainder first. Only when a split's share is below one sample does it get one taken
    from the split most above its own share (then a count may be further than one from its share:
    that is the price of every class in every split).
    """
    k = len(ratios)
    if n < k:
        raise ValueError(f"{n} samples cannot fill {k} splits")
    shares = [r * n for r in ratios]
    # The epsilon keeps 0.7 * 10 = 7.000000000000001 (or 6.999...) from shifting a sample.
    counts = [math.floor(s + 1e-9) for s in shares]
    # Rounded so that ratios equal up to float noise (1/3 vs 0.333...) break ties by split order.
    by_remainder = sorted(range(k), key=lambda i: (-round(shares[i] - counts[i], 9), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(k):
        if counts[i] == 0:
            donor = max((j for j in range(k) if counts[j] > 1), key=lambda j: (counts[j] - shares[j], -j))
            counts[donor] -= 1
            counts[i] = 1
    return counts


def make_split(
    table: SampleTable,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = DEFAULT_SEED,
    grouped: bool = True,
) -> pd.DataFrame:
    """Assign every row of ``table`` to train/val/test; returns the table's frame plus ``split``.

    Every class lands in every split, or a :class:`UserError` names the class that is too small.
    Rows come back ordered by split, then path. Same table, ratios and seed: same result.
    """
    ratios = normalise_ratios(ratios)
    frame = table.frame.reset_index(drop=True)
    assignment = assign_parts(table, ratios, seed, grouped)
    result = frame.copy()
    result.insert(len(REQUIRED_COLUMNS), "split", np.asarray(SPLITS, dtype=object)[assignment])
    order = np.lexsort((result["path"].to_numpy(), assignment))
    return result.iloc[order].reset_index(drop=True)


def assign_parts(table: SampleTable, ratios: Sequence[float], seed: int, grouped: bool) -> np.ndarray:
    """The part (index into ``ratios``: 2 for train/val, 3 for train/val/test) of each row of
    ``table.frame`` in its row order, by the algorithm :func:`make_split` describes."""
    frame = table.frame.reset_index(drop=True)
    labels = pd.Categorical(frame["label"], categories=table.classes).codes
    if grouped and table.has_groups:
        return _grouped_assignment(table, frame, labels, ratios, seed)
    return _image_level_assignment(table, labels, ratios, seed)


def _check_class_size(table: SampleTable, label_counts: np.ndarray, unit: str, hint: str,
                      parts: Sequence[str] = SPLITS) -> None:
    for c, name in enumerate(table.classes):
        if label_counts[c] < len(parts):
            raise UserError(
                f"class '{name}' of {table.name} has {label_counts[c]} {unit}; every class needs at "
                f"least {len(parts)} to appear in {', '.join(parts[:-1])} and {parts[-1]}{hint}"
            )


def _image_level_assignment(
    table: SampleTable, labels: np.ndarray, ratios: Sequence[float], seed: int
) -> np.ndarray:
    _check_class_size(table, np.bincount(labels, minlength=len(table.classes)), "image(s)",
                      "; add images or drop the class", SPLITS[: len(ratios)])
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for c in range(len(table.classes)):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        cuts = np.cumsum(class_counts(len(members), ratios))[:-1]
        for s, part in enumerate(np.split(members, cuts)):
            assignment[part] = s
    return assignment


def _grouped_assignment(
    table: SampleTable, frame: pd.DataFrame, labels: np.ndarray, ratios: Sequence[float], seed: int
) -> np.ndarray:
    n_classes = len(table.classes)
    group_codes, _ = pd.factorize(frame["group"], sort=False)
    n_groups = int(group_codes.max()) + 1 if len(group_codes) else 0
    # composition[g] = [(class, count), ...]; built from unique (group, class) pairs in one pass.
    pair_keys, pair_counts = np.unique(group_codes * n_classes + labels, return_counts=True)
    composition: list[list[tuple[int, int]]] = [[] for _ in range(n_groups)]
    groups_per_class = np.zeros(n_classes, dtype=np.int64)
    for key, count in zip(pair_keys.tolist(), pair_counts.tolist()):
        g, c = divmod(key, n_classes)
        composition[g].append((c, count))
        groups_per_class[c] += 1
    _check_class_size(table, groups_per_class, "group(s)", "; use --no-group for an image-level split",
                      SPLITS[: len(ratios)])

    sizes = np.bincount(group_codes, minlength=n_groups)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n_groups)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]

    class_totals = np.bincount(labels, minlength=n_classes)
    targets = [[r * class_totals[c] for c in range(n_classes)] for r in ratios]
    scale = [[max(t, 1.0) for t in row] for row in targets]
    filled = [[0] * n_classes for _ in ratios]
    group_split = np.empty(n_groups, dtype=np.int64)
    splits = range(len(ratios))
    for g in order.tolist():
        parts = composition[g]
        best, best_cost = 0, math.inf
        for s in splits:
            fs, ts, sc = filled[s], targets[s], scale[s]
            # Increase of sum((filled - target)^2 / target) if this group joins split s.
            cost = sum(n * (2 * (fs[c] - ts[c]) + n) / sc[c] for c, n in parts)
            if cost < best_cost:
                best, best_cost = s, cost
        group_split[g] = best
        for c, n in parts:
            filled[best][c] += n
    _fill_empty_cells(table, composition, group_split, filled, order)
    return group_split[group_codes]


def _fill_empty_cells(
    table: SampleTable,
    composition: list[list[tuple[int, int]]],
    group_split: np.ndarray,
    filled: list[list[int]],
    order: np.ndarray,
) -> None:
    """Move a small group into any split that ended up without a class (rare: tiny classes)."""
    n_classes = len(table.classes)
    for c in range(n_classes):
        for s in range(len(filled)):
            if filled[s][c] > 0:
                continue
            # Smallest groups last in `order`: try them first; never empty another cell.
            for g in order[::-1].tolist():
                parts = dict(composition[g])
                source = int(group_split[g])
                if c not in parts or source == s:
                    continue
                if any(filled[source][k] - n <= 0 for k, n in parts.items()):
                    continue
                for k, n in parts.items():
                    filled[source][k] -= n
                    filled[s][k] += n
                group_split[g] = s
                break
            else:
                raise UserError(
                    f"class '{table.classes[c]}' of {table.name} cannot reach the {SPLITS[s]} split "
                    "without splitting a group; use --no-group or change --ratios"
                )


# ---------------------------------------------------------------------------------------------
# The split file: CSV + manifest


@dataclass
class Split:
    """A split file read back and checked against its manifest."""

    frame: pd.DataFrame
    manifest: dict
    root: Path
    classes: list[str]
    ordinal: bool
    sha256: str
    csv_path: Path

    def part(self, name: str) -> pd.DataFrame:
        """The rows of one split (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise UserError(f"unknown split '{name}'; use one of {', '.join(SPLITS)}")
        return self.frame[self.frame["split"] == name].reset_index(drop=True)


def split_counts(frame: pd.DataFrame, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{split: {class: count}}`` in canonical split and class order, zeros included."""
    table = pd.crosstab(frame["split"], frame["label"])
    return {
        s: {c: int(table.at[s, c]) if s in table.index and c in table.columns else 0 for c in classes}
        for s in SPLITS
    }


def frame_to_csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def write_split(frame: pd.DataFrame, manifest: dict, csv_path: str | os.PathLike) -> dict:
    """Write the split CSV, then its manifest (``<csv>.json``), both atomically.

    ``manifest`` needs at least ``dataset``, ``data_root`` and ``classes``; this fills in
    ``counts``, ``n_samples``, ``csv_sha256``, ``columns`` and ``tool_version`` and returns it.
    Nothing in it depends on the clock, so equal inputs give byte-identical files.
    """
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"split frame lacks columns {missing}")
    for key in ("dataset", "data_root", "classes"):
        if key not in manifest:
            raise ValueError(f"split manifest lacks '{key}'")
    columns = list(SPLIT_COLUMNS) + [c for c in frame.columns if c not in SPLIT_COLUMNS]
    text = frame_to_csv(frame[columns])
    manifest = dict(manifest)
    manifest.update(
        columns=columns,
        counts=split_counts(frame, manifest["classes"]),
        n_samples=len(frame),
        csv_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        tool_version=__version__,
    )
    manifest.setdefault("ordinal", False)
    csv_path = Path(csv_path)
    atomic_write_text(csv_path, text)
    atomic_write_json(manifest_path(csv_path), manifest)
    return manifest


def read_split_frame(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise UserError(f"split file '{csv_path}' not found; create it with accvit-med split")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise UserError(f"split file '{csv_path}' is not a valid CSV; re-create it with accvit-med split") from None
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"split file '{csv_path}' lacks column(s) {', '.join(missing)}; a split CSV has "
            f"{','.join(SPLIT_COLUMNS)}"
        )
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise UserError(f"split file '{csv_path}' has unknown split value(s) {bad}; use train, val, test")
    return frame


def read_split(csv_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Split:
    """Read a split CSV and its manifest, checking one against the other.

    ``root`` overrides the manifest's ``data_root`` (a data set moved to another machine).
    """
    csv_path = Path(csv_path)
    frame = read_split_frame(csv_path)
    json_path = manifest_path(csv_path)
    if not json_path.is_file():
        raise UserError(f"manifest '{json_path}' not found beside the split; re-create it with accvit-med split")
    try:
        manifest = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"manifest '{json_path}' is not valid JSON; re-create it with accvit-med split") from None
    for key in ("classes", "csv_sha256", "data_root"):
        if key not in manifest:
            raise UserError(f"manifest '{json_path}' lacks '{key}'; re-create it with accvit-med split")
    sha = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    if sha != manifest["csv_sha256"]:
        raise UserError(
            f"split file '{csv_path}' does not match its manifest (sha256 differs: edited after it "
            "was written?); re-create both with accvit-med split"
        )
    classes = list(manifest["classes"])
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise UserError(f"split file '{csv_path}' has label(s) {unknown} not in its manifest's classes {classes}")
    return Split(
        frame=frame,
        manifest=manifest,
        root=Path(root) if root is not None else Path(manifest["data_root"]),
        classes=classes,
        ordinal=bool(manifest.get("ordinal", False)),
        sha256=sha,
        csv_path=csv_path,
    )
