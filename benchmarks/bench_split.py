"""How long `accvit-med split` takes on the full EyePACS label file (35,126 rows, no --check).

Builds the EyePACS layout at full size in a temporary folder -- trainLabels.csv with the real
class counts, both eyes per patient, 35,126 small placeholder files of varied sizes (the split
never decodes images without --check) -- then times the whole job (load, duplicate scan,
group-aware split, audit, write) and its parts, next to scikit-learn's StratifiedGroupKFold doing
only the split, and prints the seconds and ratios side by side.

    .venv/bin/python benchmarks/bench_split.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

LEVEL_COUNTS = (25810, 2443, 5292, 873, 708)  # none .. proliferative, 35,126 images


def build_layout(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    levels = np.repeat(np.arange(5), LEVEL_COUNTS)
    rng.shuffle(levels)
    patients = np.sort(rng.choice(np.arange(10, 50000), len(levels) // 2, replace=False))
    names = [f"{p}_{eye}" for p in patients for eye in ("left", "right")]
    (root / "train").mkdir(parents=True)
    for i, name in enumerate(names):
        # Unique first bytes, then a sparse tail (no disk used) up to a size in the range of the
        # resized mirrors' JPEGs (20-400 KB), so sizes collide about as often as in the real set.
        path = root / "train" / f"{name}.jpeg"
        path.write_bytes(i.to_bytes(8, "little"))
        os.truncate(path, int(rng.integers(20_000, 400_000)))
    pd.DataFrame({"image": names, "level": levels}).to_csv(root / "trainLabels.csv", index=False)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def sklearn_split(table) -> float:
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=42)
    frame = table.frame
    start = time.perf_counter()
    # Five folds -> 3 train, 1 val, 1 test: the usual way to get 60/20/20 with groups from sklearn.
    fold_of = np.empty(len(frame), dtype=int)
    for k, (_, test) in enumerate(folds.split(frame, frame["label"], frame["group"])):
        fold_of[test] = k
    return time.perf_counter() - start


def main() -> None:
    from accvit_med.datasets import load
    from accvit_med.datasets.audit import audit_split, exact_duplicates
    from accvit_med.datasets.create_split import create_split
    from accvit_med.datasets.splits import make_split

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "eyepacs"
        _, build_s = timed(build_layout, root)
        print(f"built the layout (35,126 files) in {build_s:.1f} s (not timed below)")
        result, total_s = timed(create_split, "eyepacs", root, Path(tmp) / "splits" / "eyepacs.csv", progress=False)
        table, load_s = timed(load, "eyepacs", root)
        duplicates, dup_s = timed(exact_duplicates, table.root, table.frame["path"])
        frame, split_s = timed(make_split, table)
        _, audit_s = timed(audit_split, frame, duplicates, True)
        frame_u, split_u_s = timed(make_split, table, grouped=False)
        sk_s = sklearn_split(table)
        print(f"rows: {len(result.frame)}, grouped: {result.manifest['grouped']}, audit clean: {result.audit.clean}")
        print(f"{'step':<40}{'seconds':>10}")
        for name, seconds in [
            ("accvit-med split (whole job)", total_s),
            ("  load trainLabels.csv + index images", load_s),
            ("  byte-identical file scan", dup_s),
            ("  group-aware split", split_s),
            ("  leakage audit", audit_s),
            ("  image-level split (--no-group)", split_u_s),
            ("sklearn StratifiedGroupKFold (split only)", sk_s),
        ]:
            print(f"{name:<40}{seconds:>10.3f}")
        print(f"ratio sklearn split / our group-aware split: {sk_s / split_s:.1f}x")
        counts = pd.crosstab(frame["label"], frame["split"])[["train", "val", "test"]]
        worst = (counts - np.outer(counts.sum(axis=1), [0.6, 0.2, 0.2])).abs().to_numpy().max()
        print(f"largest per-class deviation from 60/20/20 (group-aware): {worst:.1f} images")


if __name__ == "__main__":
    main()
