"""The predictions CSV: the one place its format is read, written and checked.

Format (one row per image, comma-separated, UTF-8, header first)::

    path,label,pred,prob_<class 0>,prob_<class 1>,...

``label`` is the true class name, ``pred`` the predicted class name, and there is one
``prob_<class>`` column per class, in the split manifest's class order; the class names are
the strings after ``prob_``. Optional ``meta_<column>`` columns after them carry the split's
subgroup metadata (``meta_age``, ``meta_sex``, ``meta_eye``...) for the report's subgroup table;
other columns are ignored. Probabilities lie in [0, 1] and each row sums to 1 (within
:data:`PROB_SUM_TOLERANCE`). Whatever produced a file in this format, ``accvit-med report``
reads it.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_text

REQUIRED_COLUMNS = ("path", "label", "pred")
PROB_PREFIX = "prob_"
META_PREFIX = "meta_"
# Softmax outputs written with 8 significant digits sum to 1 within ~1e-7; 1e-3 also admits
# float16 outputs and files rounded by other tools, while still catching logits or percentages.
PROB_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Predictions:
    """One predictions file, validated: rows in file order, classes in column order."""

    paths: np.ndarray  # (n,) str
    labels: np.ndarray  # (n,) str, true class names
    preds: np.ndarray  # (n,) str, predicted class names
    probs: np.ndarray  # (n, k) float64, columns in ``classes`` order
    classes: tuple[str, ...]
    source: str | None = None  # the file it was read from, as given
    # Subgroup metadata per row (the ``meta_<column>`` columns), strings; empty when there are none.
    metadata: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def y_true(self) -> np.ndarray:
        """True labels as class indices."""
        return _to_indices(self.labels, self.classes)

    @property
    def y_pred(self) -> np.ndarray:
        """Predicted labels as class indices."""
        return _to_indices(self.preds, self.classes)

    def take(self, order: np.ndarray) -> "Predictions":
        """The same predictions with rows reordered (or selected) by ``order``."""
        return Predictions(
            self.paths[order], self.labels[order], self.preds[order], self.probs[order],
            self.classes, self.source, {k: v[order] for k, v in self.metadata.items()},
        )

    def with_class_order(self, classes: Sequence[str]) -> "Predictions":
        """The same predictions with probability columns permuted to ``classes``' order."""
        if sorted(classes) != sorted(self.classes):
            raise ValueError("with_class_order needs the same set of classes")
        perm = [self.classes.index(c) for c in classes]
        return Predictions(
            self.paths, self.labels, self.preds, self.probs[:, perm], tuple(classes), self.source, self.metadata
        )


def _to_indices(names: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(classes)}
    return np.fromiter((lookup[name] for name in names), dtype=np.int64, count=len(names))


def read_predictions(path: str | os.PathLike, tolerance: float = PROB_SUM_TOLERANCE) -> Predictions:
    """Read and validate a predictions CSV; any problem is one :class:`UserError` line."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"predictions file '{path}' not found; pass a run directory holding "
            "predictions_test.csv or a predictions CSV (path,label,pred,prob_<class>...)"
        )
    try:
        # Everything as strings first: class names such as "0" or "NA" must stay names.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise UserError(f"predictions file '{path}' is not a readable CSV ({err}); "
                        "write it as comma-separated UTF-8 with a header row") from None
    columns = [str(c) for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    prob_columns = [c for c in columns if c.startswith(PROB_PREFIX)]
    if missing:
        raise UserError(
            f"predictions file '{path}' lacks column(s) {', '.join(missing)} (has: "
            f"{', '.join(columns[:8])}); expected path,label,pred,prob_<class>..."
        )
    if len(prob_columns) < 2:
        raise UserError(
            f"predictions file '{path}' has {len(prob_columns)} prob_<class> column(s); "
            "expected one per class (at least 2), e.g. prob_benign,prob_malignant"
        )
    classes = tuple(c[len(PROB_PREFIX):] for c in prob_columns)
    if len(set(classes)) != len(classes) or "" in classes:
        raise UserError(f"predictions file '{path}' has empty or repeated prob_<class> columns; "
                        "write one prob_<class> column per class name")
    if frame.empty:
        raise UserError(f"predictions file '{path}' has no rows; it needs one row per test image")
    repeated = frame["path"].duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        raise UserError(f"predictions file '{path}' line {row + 2}: image '{frame['path'].iloc[row]}' is listed "
                        "more than once; each image must be scored once, remove the repeated rows")

    probs = frame[prob_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    _check_probabilities(probs, path, tolerance)
    labels = frame["label"].to_numpy(dtype=str)
    preds = frame["pred"].to_numpy(dtype=str)
    for column, values in (("label", labels), ("pred", preds)):
        unknown = sorted(set(values) - set(classes))
        if unknown:
            row = int(np.flatnonzero(~np.isin(values, classes))[0])
            raise UserError(
                f"predictions file '{path}' line {row + 2}: {column} '{unknown[0]}' is not one of "
                f"the classes from the prob_ columns ({', '.join(classes)}); fix the {column} "
                "or add its prob_ column"
            )
    metadata = {c[len(META_PREFIX):]: frame[c].to_numpy(dtype=str)
                for c in columns if c.startswith(META_PREFIX) and len(c) > len(META_PREFIX)}
    return Predictions(
        frame["path"].to_numpy(dtype=str), labels, preds, probs, classes, source=str(path), metadata=metadata
    )


def _check_probabilities(probs: np.ndarray, path: Path, tolerance: float) -> None:
    def line_of(bad_rows: np.ndarray) -> int:
        return int(np.flatnonzero(bad_rows)[0]) + 2  # +1 for the header, +1 for 1-based lines

    not_number = ~np.isfinite(probs).all(axis=1)
    if not_number.any():
        raise UserError(f"predictions file '{path}' line {line_of(not_number)}: a prob_ value "
                        "is empty or not a number; write one probability per class")
    out_of_range = ((probs < 0) | (probs > 1)).any(axis=1)
    if out_of_range.any():
        raise UserError(f"predictions file '{path}' line {line_of(out_of_range)}: a probability "
                        "is outside [0, 1]; write softmax probabilities, not logits or percentages")
    sums = probs.sum(axis=1)
    bad_sum = np.abs(sums - 1.0) > tolerance
    if bad_sum.any():
        line = line_of(bad_sum)
        raise UserError(
            f"predictions file '{path}' line {line}: probabilities sum to "
            f"{sums[line - 2]:.6g}, not 1 (tolerance {tolerance:g}); write softmax probabilities"
        )


def write_predictions(
    path: str | os.PathLike,
    paths: Sequence[str],
    labels: Sequence,
    preds: Sequence,
    probs,
    classes: Sequence[str],
    metadata: Optional[Mapping[str, Sequence[str]]] = None,
) -> None:
    """Write a predictions CSV atomically (see :func:`predictions_csv`)."""
    atomic_write_text(path, predictions_csv(paths, labels, preds, probs, classes, metadata))


def predictions_csv(
    paths: Sequence[str],
    labels: Optional[Sequence],
    preds: Sequence,
    probs,
    classes: Sequence[str],
    metadata: Optional[Mapping[str, Sequence[str]]] = None,
) -> str:
    """The text of a predictions CSV: ``path,label,pred,prob_<class>...`` (no ``label`` column when
    ``labels`` is None, as ``predict`` writes for images without a known class).

    ``labels`` and ``preds`` are class names or class indices into ``classes``; ``probs`` is an
    (n, len(classes)) array of probabilities in ``classes`` order; ``metadata`` (column -> one
    string per row) adds the ``meta_<column>`` columns.
    """
    metadata = dict(metadata or {})
    classes = [str(c) for c in classes]
    probs = np.asarray(probs, dtype=np.float64)
    n = len(paths)
    if probs.shape != (n, len(classes)):
        raise ValueError(f"probs has shape {probs.shape}, expected ({n}, {len(classes)})")
    label_names = None if labels is None else _as_names(labels, classes, "labels")
    pred_names = _as_names(preds, classes, "preds")
    if (label_names is not None and len(label_names) != n) or len(pred_names) != n:
        raise ValueError("paths, labels and preds must have the same length")
    if any(len(values) != n for values in metadata.values()):
        raise ValueError("every metadata column needs one value per row")

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = REQUIRED_COLUMNS if label_names is not None else tuple(c for c in REQUIRED_COLUMNS if c != "label")
    writer.writerow([*columns, *(PROB_PREFIX + c for c in classes), *(META_PREFIX + c for c in metadata)])
    for row in range(n):
        known = [] if label_names is None else [label_names[row]]
        # 8 significant digits: rows still sum to 1 within 1e-7, and files stay small.
        writer.writerow([str(paths[row]), *known, pred_names[row], *(f"{p:.8g}" for p in probs[row]),
                         *(str(values[row]) for values in metadata.values())])
    return buffer.getvalue()


def _as_names(values: Sequence, classes: list[str], what: str) -> list[str]:
    names = []
    for value in values:
        if isinstance(value, (int, np.integer)):
            if not 0 <= int(value) < len(classes):
                raise ValueError(f"{what}: class index {value} out of range for {len(classes)} classes")
            names.append(classes[int(value)])
        else:
            name = str(value)
            if name not in classes:
                raise ValueError(f"{what}: '{name}' is not one of {classes}")
            names.append(name)
    return names
