"""What the evidence sections read beside a run's predictions: its split file and its external
evaluations, found from the run directory (``config.json`` names the split).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd


def file_name(text: str) -> str:
    """``text`` as a safe file or folder name (as the report names its figures)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def rendered(**fields):
    """The report's ``Rendered`` (imported late: the sections module imports scoring and figures)."""
    from accvit_med.reports.sections import Rendered

    return Rendered(**fields)


@dataclass
class RunSplit:
    """A run's split as written by ``accvit-med split``: its CSV rows and manifest."""

    path: Path
    frame: pd.DataFrame
    manifest: dict


def run_split(run_dir: Optional[str]) -> Optional[RunSplit]:
    """The split a run was trained on, or None (no run directory, or the split is gone)."""
    if run_dir is None:
        return None
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
        recorded = config["split"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for key in ("absolute_path", "path"):
        csv_path = Path(str(recorded.get(key, "")))
        manifest_path = csv_path.with_suffix(".json")
        if csv_path.is_file() and manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
            except (OSError, ValueError, pd.errors.ParserError):
                return None
            return RunSplit(csv_path, frame, manifest)
    return None


@dataclass
class ExternalEvaluation:
    """One ``<run>/external/<name>/``: its metrics.json and predictions file."""

    name: str
    folder: Path
    metrics: dict
    predictions: Path


def external_evaluations(run_dir: Optional[str]) -> list[ExternalEvaluation]:
    """Every external evaluation of a run, by name."""
    if run_dir is None:
        return []
    found = []
    for metrics_path in sorted((Path(run_dir) / "external").glob("*/metrics.json")):
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        predictions = metrics_path.parent / "predictions.csv"
        if isinstance(metrics, dict) and "external" in metrics and predictions.is_file():
            found.append(ExternalEvaluation(metrics_path.parent.name, metrics_path.parent, metrics, predictions))
    return found
