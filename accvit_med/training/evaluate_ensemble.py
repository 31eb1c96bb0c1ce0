"""``accvit-med evaluate --run A --run B ...``: score each run, then their ensemble.

Each member is evaluated as alone (its own ``evaluate/<checkpoint>/`` or ``external/<name>/``
folder), then :mod:`accvit_med.training.ensemble` averages the members' probabilities on the same
images into ``out``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from accvit_med.errors import UserError
from accvit_med.training.ensemble import average, load_members, with_temperatures, write_ensemble


@dataclass
class EnsembleResult:
    label: str
    predictions: Path
    metrics_path: Path
    metrics: dict
    members: list[Path]  # each member's own predictions file
    notes: list[str] = field(default_factory=list)


def evaluate_ensemble(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    checkpoint: str = "best",
    part: str = "test",
    calibrate: bool = True,
    external: Optional[dict[str, Any]] = None,
    **runtime: Any,
) -> EnsembleResult:
    """Evaluate every run of ``runs`` and write their ensemble into ``out``.

    ``external`` holds :func:`~accvit_med.training.evaluate_external.evaluate_external`'s target
    arguments (dataset, data_dir, split_file, name, class_map) to score an external data set; without
    it, ``part`` of the runs' one split is scored. ``runtime``: device, workers, batch_size (and
    data_dir for the internal split). Calibration (temperature from each run's validation
    predictions) applies to the test part and to external data.
    """
    if len(runs) < 2:
        raise ValueError("an ensemble needs at least two runs")
    members = load_members(runs, same_split=external is None)
    notes: list[str] = []
    if calibrate and external is None and part != "test":
        notes.append(f"raw probabilities averaged: the temperatures are fitted on validation, so --split {part} "
                     "is not calibrated")
        calibrate = False
    members, more = with_temperatures(members, calibrate)
    notes += more
    files, info = [], {}
    for member in members:
        if external is not None:
            from accvit_med.training.evaluate_external import evaluate_external

            result = evaluate_external(member.run, checkpoint=checkpoint, **external, **runtime)
            files.append(result.predictions)
            info = {"dataset": result.metrics["external"]["name"],
                    "evaluated": {"external": result.metrics["external"]["name"], "checkpoint": checkpoint}}
        else:
            from accvit_med.training.evaluate_run import evaluate_run

            result = evaluate_run(member.run, checkpoint=checkpoint, part=part, **runtime)
            files.append(result.predictions)
            info = {"dataset": member.record.dataset, "evaluated": {"split": part, "checkpoint": checkpoint}}
    classes = list(members[0].record.classes or ())
    predictions = average(files, classes, [m.temperature for m in members])
    name = f"predictions_{'test' if external is not None else part}.csv"
    path, metrics = write_ensemble(Path(out), name, predictions, members, files, info,
                                   bool(members[0].record.ordinal))
    return EnsembleResult(metrics["ensemble"]["label"], path, Path(out) / "metrics.json", metrics, files, notes)


def check_ensemble_out(out: Optional[Path], runs: Sequence[Path]) -> Path:
    """``--out`` of an ensemble: required, and not inside one of its runs (whose --force would remove it)."""
    if out is None:
        raise UserError("an ensemble of several --run needs --out FOLDER for its predictions and ensemble.json")
    resolved = out.resolve()
    for run in runs:
        if resolved == run.resolve() or run.resolve() in resolved.parents:
            raise UserError(f"--out '{out}' lies inside run '{run}'; write the ensemble outside its runs")
    return out
