"""The whole ``accvit-med split`` job as one library call: load, check, split, audit, write.

Order matters: unreadable images (``check``) are left out before splitting, and byte-identical
files are joined into one group before a group-aware split, so that the audit of what we write
can only come out clean. If it does not, that is a bug, and we refuse to write the split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from accvit_med.datasets import load
from accvit_med.datasets.audit import AuditResult, audit_split, exact_duplicates, merge_groups
from accvit_med.datasets.base import LEFT_OUT_REASONS, UNREADABLE, SampleTable
from accvit_med.datasets.folds import DEFAULT_VAL_FRACTION, check_fold_options, default_cv_dir, make_folds, write_folds
from accvit_med.datasets.imagecheck import find_unreadable
from accvit_med.datasets.splits import (
    DEFAULT_RATIOS,
    DEFAULT_SEED,
    SPLITS,
    default_split_path,
    make_split,
    manifest_path,
    normalise_ratios,
    read_split,
    read_split_frame,
    write_split,
)
from accvit_med.errors import UserError

# Split protocols by name. "grouped" (the default): each group (lesion, patient, byte-identical
# files) stays in one split. "paper": the ACC-ViT paper's (appendix C.2) -- per image, 60:20:20,
# stratified by class, random with the seed recorded in the manifest.
PROTOCOLS = ("grouped", "paper")
PAPER_RATIOS = (0.6, 0.2, 0.2)


def protocol_grouping(protocol: str, grouped: Optional[bool], ratios: Sequence[float], dedupe: bool) -> bool:
    """Whether a split under ``protocol`` is group-aware; options that contradict it are refused.

    Args:
        protocol: one of :data:`PROTOCOLS`.
        grouped: the caller's explicit choice, or None for the protocol's.
        ratios: train, val, test proportions (normalised).
        dedupe: whether near-identical images are to be grouped.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    if protocol == "grouped":
        return True if grouped is None else grouped
    if grouped:
        raise UserError("--protocol paper splits per image; drop --group (or use --protocol grouped)")
    if any(abs(a - b) > 1e-9 for a, b in zip(normalise_ratios(ratios), PAPER_RATIOS)):
        raise UserError("--protocol paper fixes the ratios at 60,20,20; drop --ratios (or use --protocol grouped)")
    if dedupe:
        raise UserError("--dedupe groups near-identical images, which --protocol paper (per image) ignores; "
                        "drop one of them")
    return False


@dataclass
class SplitResult:
    frame: pd.DataFrame
    manifest: dict
    audit: AuditResult
    csv_path: Path
    excluded: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def create_split(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    seed: int = DEFAULT_SEED,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    grouped: Optional[bool] = None,
    check: bool = False,
    dedupe: bool = False,
    progress: bool = True,
    protocol: str = "grouped",
    subgroups: Optional[Sequence[str]] = None,
) -> SplitResult:
    """Split ``dataset`` and write ``out`` (default ``splits/<dataset>.csv``) plus its manifest.

    ``protocol`` is one of :data:`PROTOCOLS`; ``grouped`` None means the protocol's choice (an
    explicit True with the paper's per-image protocol is refused, as are other ratios or ``dedupe``).
    ``subgroups`` names the metadata columns kept after ``path,label,group,split`` (default: the
    adapter's, e.g. HAM10000's age, sex, localization, dx_type; EyePACS's eye; none for csv).
    """
    ratios = normalise_ratios(ratios)
    grouped = protocol_grouping(protocol, grouped, ratios, dedupe)
    data = _prepare(dataset, data_dir, grouped, check, dedupe, progress, subgroups)
    frame = make_split(data.table, ratios, seed, grouped=data.use_groups)
    audit = _audit(frame, data)
    manifest = {**_manifest(data, protocol, seed, dedupe), "ratios": dict(zip(SPLITS, ratios)),
                "audit": audit.to_dict()}
    csv_path = Path(out) if out is not None else default_split_path(dataset)
    manifest = write_split(frame, manifest, csv_path)
    return SplitResult(frame, manifest, audit, csv_path, data.excluded, data.notes)


@dataclass
class FoldsResult:
    frames: list[pd.DataFrame]
    manifest: dict  # cv.json's content
    audits: list[AuditResult]
    out_dir: Path
    excluded: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def csv_paths(self) -> list[Path]:
        return [self.out_dir / fold["split"] for fold in self.manifest["folds"]]


def create_folds(
    dataset: str,
    k: int,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    grouped: Optional[bool] = None,
    check: bool = False,
    dedupe: bool = False,
    progress: bool = True,
    protocol: str = "grouped",
    subgroups: Optional[Sequence[str]] = None,
) -> FoldsResult:
    """``k``-fold cross-validation of ``dataset`` into the folder ``out`` (default
    ``splits/<dataset>-<k>fold/``): ``fold1.csv`` ... with their manifests, and ``cv.json``
    (see :mod:`accvit_med.datasets.folds`). Options as for :func:`create_split`."""
    check_fold_options(k, val_fraction)
    grouped = protocol_grouping(protocol, grouped, PAPER_RATIOS, dedupe)
    out_dir = Path(out) if out is not None else default_cv_dir(dataset, k)
    if out_dir.suffix.lower() == ".csv":
        raise UserError(f"with --folds, --out names a folder for the fold files, not a CSV file ('{out_dir}')")
    data = _prepare(dataset, data_dir, grouped, check, dedupe, progress, subgroups)
    frames = make_folds(data.table, k, val_fraction, seed, grouped=data.use_groups)
    audits = [_audit(frame, data) for frame in frames]
    tests = pd.concat([frame.loc[frame["split"] == "test", "path"] for frame in frames])
    if len(tests) != len(data.table) or tests.duplicated().any():
        raise RuntimeError("internal error: the folds' test parts do not hold every image exactly once")
    manifest = write_folds(frames, _manifest(data, protocol, seed, dedupe), [a.to_dict() for a in audits],
                           out_dir, val_fraction)
    return FoldsResult(frames, manifest, audits, out_dir, data.excluded, data.notes)


@dataclass
class _Prepared:
    """A data set loaded for splitting: unreadable images left out, byte-identical files grouped."""

    table: SampleTable
    notes: list[str]
    excluded: list[tuple[str, str]]
    flow: dict
    duplicates: list[list[str]]
    use_groups: bool
    check: bool


def _prepare(dataset, data_dir, grouped: bool, check: bool, dedupe: bool, progress: bool,
             subgroups: Optional[Sequence[str]]) -> _Prepared:
    table = keep_subgroups(load(dataset, data_dir, dedupe=dedupe, progress=progress), subgroups)
    notes = list(table.notes)
    n_listed = len(table)
    excluded: list[tuple[str, str]] = []
    unreadable_labels: list[str] = []
    if check:
        excluded = find_unreadable(table.root, list(table.frame["path"]), progress=progress)
        if excluded:
            label_of = dict(zip(table.frame["path"], table.frame["label"]))
            unreadable_labels = [label_of[p] for p, _ in excluded]
            table = _without(table, {p for p, _ in excluded})
    flow = _flow(table, n_listed, unreadable_labels)
    duplicates = exact_duplicates(table.root, table.frame["path"])
    use_groups = grouped and (table.has_groups or bool(duplicates))
    if use_groups:
        table = merge_groups(table, duplicates, "byte-identical files")
        notes = list(table.notes)
    flow["byte_identical_files_grouped"] = sum(len(c) for c in duplicates) if use_groups else 0
    return _Prepared(table, notes, excluded, flow, duplicates, use_groups, check)


def _audit(frame: pd.DataFrame, data: _Prepared) -> AuditResult:
    audit = audit_split(frame, data.duplicates, grouped=data.use_groups)
    if data.use_groups and not audit.clean:
        raise RuntimeError(f"internal error: a group-aware split leaks: {audit.lines()}")
    return audit


def _manifest(data: _Prepared, protocol: str, seed: int, dedupe: bool) -> dict:
    """The manifest keys a split and every fold of a cross-validation share."""
    table = data.table
    manifest = {
        "dataset": table.name,
        "data_root": str(table.root),
        "protocol": protocol,
        "seed": seed,
        "grouped": data.use_groups,
        "dedupe": dedupe,
        "classes": list(table.classes),
        "ordinal": table.ordinal,
        "subgroups": list(table.subgroups),
        "flow": data.flow,
    }
    if data.check:
        manifest["excluded"] = [{"path": p, "reason": r} for p, r in data.excluded]
    return manifest


def _without(table: SampleTable, paths: set[str]) -> SampleTable:
    frame = table.frame[~table.frame["path"].isin(paths)].reset_index(drop=True)
    return replace(table, frame=frame)


def keep_subgroups(table: SampleTable, subgroups: Optional[Sequence[str]]) -> SampleTable:
    """``table`` with only the metadata columns named (None: the adapter's default ones)."""
    chosen = list(table.subgroups) if subgroups is None else list(dict.fromkeys(subgroups))
    unknown = [c for c in chosen if c not in table.metadata_columns]
    if unknown:
        offered = ", ".join(table.metadata_columns) or "none"
        raise UserError(
            f"--subgroups: {table.name} has no metadata column '{unknown[0]}' (its columns: {offered}); "
            "name columns of the label file (the csv layout keeps any extra column; a folder per class has none)"
        )
    dropped = [c for c in table.metadata_columns if c not in chosen]
    return replace(table, frame=table.frame.drop(columns=dropped), subgroups=chosen, metadata_columns=chosen)


def _flow(table: SampleTable, n_listed: int, unreadable_labels: list[str]) -> dict:
    """What the manifest records of the data flow: image files found, left out by reason, kept.

    Unreadable images have a label, so they are also counted per class; the other reasons
    (hidden files, masks, further copies, files the label file does not list) have none.
    """
    left_out = dict(table.left_out)
    if unreadable_labels:
        left_out[UNREADABLE] = len(unreadable_labels)
    return {
        "images_found": n_listed + sum(table.left_out.values()),
        "left_out": {reason: int(left_out[reason]) for reason in LEFT_OUT_REASONS if left_out.get(reason)},
        "unreadable_by_class": {c: unreadable_labels.count(c) for c in table.classes if c in unreadable_labels},
        "samples": len(table),
    }


@dataclass
class AuditReport:
    csv_path: Path
    root: Path
    n_samples: int
    audit: AuditResult


def audit_split_file(csv_path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> AuditReport:
    """Audit an existing split file (ours, with its manifest, or anyone's ``path,label,group,split``).

    Without a manifest, ``data_dir`` gives the folder the paths are relative to.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise UserError(f"split file '{csv_path}' not found; check the path given to --audit")
    if manifest_path(csv_path).is_file():
        split = read_split(csv_path, root=data_dir)
        frame, root, grouped = split.frame, split.root, bool(split.manifest.get("grouped", True))
    else:
        if data_dir is None:
            raise UserError(
                f"'{csv_path}' has no manifest beside it; pass --data-dir (the folder its paths are relative to)"
            )
        frame, root, grouped = read_split_frame(csv_path), Path(data_dir), True
    if not root.is_dir():
        raise UserError(f"data folder '{root}' of split '{csv_path}' not found; pass --data-dir")
    missing = [p for p in frame["path"] if not (root / p).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) of split '{csv_path}' do not exist under '{root}', e.g. "
            f"'{missing[0]}'; pass the right --data-dir"
        )
    duplicates = exact_duplicates(root, frame["path"])
    return AuditReport(csv_path, root, len(frame), audit_split(frame, duplicates, grouped))
