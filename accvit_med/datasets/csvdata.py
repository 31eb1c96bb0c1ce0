"""A user's own images listed in a CSV: ``path,label`` and optionally ``group``.

Any further column (age, sex, site, scanner...) is metadata: a split keeps the ones named with
``--subgroups`` for the report's subgroup table.

``--data-dir`` is the CSV file itself, or the folder holding it (``labels.csv``, or its only
``.csv``). Paths are relative to the CSV's folder, which is the data root; a path that leads
outside it (``../``, or an absolute path elsewhere) is refused, so a split never silently mixes
in files from another data set. Listed hidden and AppleDouble files are left out (with a note), as a
folder scan leaves them out; symlinks and damaged images meet the image policy like any adapter's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from accvit_med.datasets.base import HIDDEN, SampleTable, finish_frame, read_table, require_columns
from accvit_med.datasets.imagepolicy import listed_candidates
from accvit_med.errors import UserError

DEFAULT_NAME = "labels.csv"


def load(root: str | os.PathLike) -> SampleTable:
    csv_path = _find_csv(Path(root))
    root = csv_path.parent.resolve()
    frame = read_table(csv_path, "label CSV")
    require_columns(frame, ("path", "label"), csv_path, "label CSV")
    frame = frame.apply(lambda column: column.str.strip())
    for column in ("path", "label"):
        empty = frame[column] == ""
        if empty.any():
            row = int(empty.idxmax()) + 2  # 1-based, after the header line
            raise UserError(f"row {row} of '{csv_path}' has an empty '{column}'; fill it in or remove the row")
    paths = [_inside(root, p, csv_path) for p in frame["path"]]
    # The rule a folder scan applies: a hidden or AppleDouble file is never a sample.
    kept, left_out = listed_candidates(paths)
    notes = []
    if left_out:
        dropped = set(left_out)
        frame = frame[[p not in dropped for p in paths]].reset_index(drop=True)
        paths = kept
        notes.append(f"left out {len(left_out)} listed file(s) that are never image inputs (hidden, AppleDouble "
                     f"._*, OS files), e.g. '{left_out[0]}'")
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} image(s) listed in '{csv_path}' do not exist, e.g. '{missing[0]}' "
            f"(paths are relative to '{root}'); fix the paths or remove those rows"
        )
    repeated = pd.Series(paths)[pd.Series(paths).duplicated()]
    if len(repeated):
        raise UserError(f"image '{repeated.iloc[0]}' is listed twice in '{csv_path}'; remove the repeated row")
    has_groups = "group" in frame.columns
    groups = frame["group"].where(frame["group"] != "", pd.Series(paths)) if has_groups else pd.Series(paths)
    table = pd.DataFrame({"path": paths, "label": frame["label"], "group": groups})
    metadata = [c for c in frame.columns if c not in ("path", "label", "group") and c]
    for column in metadata:
        table[column] = frame[column].to_numpy()
    return SampleTable("csv", root, finish_frame(table), sorted(set(table["label"])), has_groups=has_groups,
                       notes=notes, metadata_columns=metadata, left_out={HIDDEN: len(left_out)} if left_out else {})


def _find_csv(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"'{path}' not found; pass the label CSV (path,label[,group]) or its folder as --data-dir")
    if (path / DEFAULT_NAME).is_file():
        return path / DEFAULT_NAME
    candidates = sorted(p for p in path.glob("*.csv") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"no CSV file in '{path}'; put a {DEFAULT_NAME} (path,label[,group]) there "
                        "or pass the CSV as --data-dir")
    raise UserError(
        f"several CSV files in '{path}' ({', '.join(p.name for p in candidates[:3])}...); pass the "
        "label CSV itself as --data-dir"
    )


def _inside(root: Path, listed: str, csv_path: Path) -> str:
    """``listed`` as a POSIX path relative to ``root``; a UserError if it leads outside."""
    candidate = Path(listed.replace("\\", "/"))
    joined = Path(os.path.normpath(candidate if candidate.is_absolute() else root / candidate))
    try:
        return joined.relative_to(root).as_posix()
    except ValueError:
        raise UserError(
            f"path '{listed}' in '{csv_path}' points outside the data root '{root}'; keep every "
            "image inside the CSV's folder"
        ) from None
