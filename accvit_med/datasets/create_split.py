"""The whole ``accvit-med split`` job as one library call: load, check, split, audit, write.

Order matters: unreadable images (``check``) are left out before splitting, and byte-identical
files are joined into one group before a group-aware split, so that the audit of what we write
can only come out clean. If it does not, that is a bug, and we refuse to write the split.
"""

from __future__ import annotations

from typing import Optional

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from accvit_med.datasets import load
from accvit_med.datasets.audit import AuditResult, audit_split, exact_duplicates, merge_groups
from accvit_med.datasets.base import SampleTable
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
        raise UserError("--dedupe groups near-identical images, which --protocol paper (per image) ignores; drop one of them")
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
) -> SplitResult:
    """Split ``dataset`` and write ``out`` (default ``splits/<dataset>.csv``) plus its manifest.

    ``protocol`` is one of :data:`PROTOCOLS`; ``grouped`` None means the protocol's choice (an
    explicit True with the paper's per-image protocol is refused, as are other ratios or ``dedupe``).
    """
    ratios = normalise_ratios(ratios)
    grouped = protocol_grouping(protocol, grouped, ratios, dedupe)
    table = load(dataset, data_dir, dedupe=dedupe, progress=progress)
    notes = list(table.notes)
    excluded: list[tuple[str, str]] = []
    if check:
        excluded = find_unreadable(table.root, list(table.frame["path"]), progress=progress)
        if excluded:
            table = _without(table, {p for p, _ in excluded})
    duplicates = exact_duplicates(table.root, table.frame["path"])
    use_groups = grouped and (table.has_groups or bool(duplicates))
    if use_groups:
        table = merge_groups(table, duplicates, "byte-identical files")
        notes = list(table.notes)
    frame = make_split(table, ratios, seed, grouped=use_groups)
    audit = audit_split(frame, duplicates, grouped=use_groups)
    if use_groups and not audit.clean:
        raise RuntimeError(f"internal error: a group-aware split leaks: {audit.lines()}")
    manifest = {
        "dataset": table.name,
        "data_root": str(table.root),
        "protocol": protocol,
        "seed": seed,
        "ratios": dict(zip(SPLITS, ratios)),
        "grouped": use_groups,
        "dedupe": dedupe,
        "classes": list(table.classes),
        "ordinal": table.ordinal,
        "audit": audit.to_dict(),
    }
    if check:
        manifest["excluded"] = [{"path": p, "reason": r} for p, r in excluded]
    csv_path = Path(out) if out is not None else default_split_path(dataset)
    manifest = write_split(frame, manifest, csv_path)
    return SplitResult(frame, manifest, audit, csv_path, excluded, notes)


def _without(table: SampleTable, paths: set[str]) -> SampleTable:
    frame = table.frame[~table.frame["path"].isin(paths)].reset_index(drop=True)
    return SampleTable(table.name, table.root, frame, table.classes, table.ordinal, table.has_groups, table.notes)


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
