"""A run's validation predictions, for what is fitted on validation and applied to test
(the temperature, the operating thresholds)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from accvit_med.reports.predictions import Predictions, read_predictions


def validation_predictions(run_dir: str | None, classes: Sequence[str]) -> Predictions | None:
    """``<run>/predictions_val.csv`` in ``classes`` order, rows sorted by path; None without one
    (a bare predictions CSV, or a run whose classes differ)."""
    if run_dir is None or not (Path(run_dir) / "predictions_val.csv").is_file():
        return None
    val = read_predictions(Path(run_dir) / "predictions_val.csv")
    if sorted(val.classes) != sorted(classes):
        return None
    val = val.with_class_order(classes)
    return val.take(np.argsort(val.paths, kind="stable"))
