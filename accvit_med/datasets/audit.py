"""Leakage: duplicate images and the audit of a split.

Two kinds of leak are checked on every split written and on any split given to
``accvit-med split --audit``:

* a group (lesion, patient, near-duplicate cluster) with rows in two splits;
* byte-identical files (same sha256) in two splits, whatever their names or groups.

Finding byte-identical files does not read every byte of a 35k-image data set: only files whose
size equals another file's are read, first their first 16 KiB, and only where those agree, the
whole file. Near-duplicates (re-saved, slightly altered copies, common in BUSI) are found with a
perceptual hash (``imagehash.phash``) and a small Hamming distance.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from accvit_med.datasets.base import SampleTable
from accvit_med.fileio import sha256_file

HEAD_BYTES = 1 << 14
# Hamming distance (of 64 bits) under which two pHashes count as the same picture. 0-4 catches
# re-encodes, small crops and a few changed pixels without merging distinct ultrasound frames.
NEAR_DUPLICATE_DISTANCE = 4
EXAMPLES_KEPT = 20
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)  # bits set per byte


def exact_duplicates(root: Path, paths: Iterable[str]) -> list[list[str]]:
    """Clusters (each sorted, two or more paths) of byte-identical files below ``root``."""
    base = str(root)
    by_size: dict[int, list[str]] = defaultdict(list)
    for rel in paths:
        by_size[os.stat(os.path.join(base, rel)).st_size].append(rel)
    clusters = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_head: dict[bytes, list[str]] = defaultdict(list)
        for rel in same_size:
            with open(os.path.join(base, rel), "rb") as handle:
                by_head[handle.read(HEAD_BYTES)].append(rel)
        for same_head in by_head.values():
            if len(same_head) < 2:
                continue
            by_digest: dict[str, list[str]] = defaultdict(list)
            for rel in same_head:
                by_digest[sha256_file(root / rel)].append(rel)
            clusters.extend(sorted(c) for c in by_digest.values() if len(c) > 1)
    return sorted(clusters)


def near_duplicates(
    root: Path, paths: Sequence[str], max_distance: int = NEAR_DUPLICATE_DISTANCE, progress: bool = False
) -> list[list[str]]:
    """Clusters (each sorted) of images whose perceptual hashes differ in <= ``max_distance`` bits.

    Clusters are transitive (single linkage), so a chain of near-duplicates is one cluster.
    """
    import imagehash

    from accvit_med.datasets.imagepolicy import open_image
    from accvit_med.progress import progress_bar

    hashes = np.zeros(len(paths), dtype=np.uint64)
    with progress_bar(progress) as bar:
        for i, rel in enumerate(bar.track(paths, description="perceptual hashes")):
            # The image policy's opening: upright, and a bad image is one line naming it.
            bits = imagehash.phash(open_image(root / rel, draft_size=64).convert("L")).hash.flatten()
            hashes[i] = np.packbits(bits).view(">u8")[0]
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Row by row against all later hashes: O(n^2) bit counts in numpy, fine for BUSI's 780
    # images (and a few seconds for 10k).
    for i in range(len(paths) - 1):
        xor = np.bitwise_xor(hashes[i + 1 :], hashes[i])
        distance = _POPCOUNT[xor.view(np.uint8)].reshape(-1, 8).sum(axis=1)
        for j in np.flatnonzero(distance <= max_distance).tolist():
            a, b = find(i), find(i + 1 + j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[int, list[str]] = defaultdict(list)
    for i, rel in enumerate(paths):
        members[find(i)].append(rel)
    return sorted(sorted(c) for c in members.values() if len(c) > 1)


def merge_groups(table: SampleTable, clusters: Sequence[Sequence[str]], reason: str) -> SampleTable:
    """A copy of ``table`` where the groups of each cluster's paths are joined into one group.

    The joined group is named after its alphabetically first member group, so the result does not
    depend on the order of the clusters.
    """
    frame = table.frame
    group_of = dict(zip(frame["path"], frame["group"]))
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            g = parent[g]
        return g

    for cluster in clusters:
        roots = sorted({find(group_of[p]) for p in cluster if p in group_of})
        for other in roots[1:]:
            parent[other] = roots[0]
    merged = frame.copy()
    merged["group"] = merged["group"].map(find)
    joined = sum(1 for c in clusters if len({group_of.get(p) for p in c}) > 1)
    notes = table.notes + ([f"{reason}: {joined} cluster(s) joined into one group each"] if joined else [])
    return replace(table, frame=merged, has_groups=table.has_groups or joined > 0, notes=notes)


@dataclass
class AuditResult:
    """What the audit found; ``clean`` when no group and no identical file spans two splits."""

    grouped: bool
    groups_across_splits: list[tuple[str, list[str]]] = field(default_factory=list)
    identical_across_splits: list[list[tuple[str, str]]] = field(default_factory=list)
    identical_with_different_labels: list[list[tuple[str, str]]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.groups_across_splits and not self.identical_across_splits

    def to_dict(self) -> dict:
        """For the manifest: counts, and the first few examples of each finding."""
        return {
            "groups_across_splits": len(self.groups_across_splits),
            "identical_files_across_splits": len(self.identical_across_splits),
            "identical_files_with_different_labels": len(self.identical_with_different_labels),
            "examples": {
                "groups_across_splits": [g for g, _ in self.groups_across_splits[:EXAMPLES_KEPT]],
                "identical_files_across_splits": [
                    [p for p, _ in c] for c in self.identical_across_splits[:EXAMPLES_KEPT]
                ],
                "identical_files_with_different_labels": [
                    [p for p, _ in c] for c in self.identical_with_different_labels[:EXAMPLES_KEPT]
                ],
            },
        }

    def lines(self) -> list[str]:
        """Human-readable findings, one per line (empty when there is nothing to say)."""
        out = []
        if self.groups_across_splits:
            why = "" if self.grouped else " (expected: the split is image-level, --no-group)"
            shown = ", ".join(f"{g} ({'+'.join(s)})" for g, s in self.groups_across_splits[:5])
            out.append(f"{len(self.groups_across_splits)} group(s) have rows in several splits{why}: {shown}")
        if self.identical_across_splits:
            shown = "; ".join(" = ".join(f"{p} ({s})" for p, s in c) for c in self.identical_across_splits[:3])
            out.append(f"{len(self.identical_across_splits)} set(s) of byte-identical files span several splits: "
                       f"{shown}")
        if self.identical_with_different_labels:
            conflicts = self.identical_with_different_labels
            shown = "; ".join(" = ".join(f"{p} ({lab})" for p, lab in c) for c in conflicts[:3])
            out.append(f"{len(conflicts)} set(s) of byte-identical files carry different labels: {shown}")
        return out


def audit_split(frame: pd.DataFrame, duplicates: Sequence[Sequence[str]], grouped: bool) -> AuditResult:
    """Check a split frame (path, label, group, split) given the byte-identical clusters in it."""
    result = AuditResult(grouped=grouped)
    pairs = frame[["group", "split"]].drop_duplicates()
    leaking = pairs[pairs["group"].duplicated(keep=False)]
    for group, splits in leaking.groupby("group", sort=True)["split"]:
        result.groups_across_splits.append((str(group), sorted(splits)))
    split_of = dict(zip(frame["path"], frame["split"]))
    label_of = dict(zip(frame["path"], frame["label"]))
    for cluster in duplicates:
        present = [p for p in cluster if p in split_of]
        if len({split_of[p] for p in present}) > 1:
            result.identical_across_splits.append([(p, split_of[p]) for p in present])
        if len({label_of[p] for p in present}) > 1:
            result.identical_with_different_labels.append([(p, label_of[p]) for p in present])
    return result
