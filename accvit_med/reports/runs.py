"""What the report reads: run directories, bare predictions CSVs, and labelled CSVs.

An input is one of

- a run directory (``runs/<dataset>/<model>/<run>/``): its ``predictions_<split>.csv`` and, when
  present, its record (config.json: ``model``, ``dataset``, ``classes``, ``ordinal``). A directory that
  holds only ``predictions_test.csv`` is a run too: its model is the directory's name.
- a predictions CSV: its model is the file's stem (the parent folder's name for
  ``predictions_*.csv``);
- ``MODEL=PATH`` or ``DATASET/MODEL=PATH``: either of the above, named explicitly.

Without a config, the dataset is ``unknown`` unless given. The classes are ordinal (quadratic
weighted kappa is reported) when the config or the caller says so, or when the classes are
EyePACS's grades.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accvit_med.errors import UserError
from accvit_med.fileio import sha256_file
from accvit_med.reports.metrics import is_ordinal_classes
from accvit_med.reports.predictions import Predictions, read_predictions
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord

UNKNOWN_DATASET = "unknown"
_LABEL = re.compile(r"^(?:(?P<dataset>[^=/]+)/)?(?P<model>[^=/]+)=(?P<path>.+)$")


@dataclass(frozen=True)
class RunInput:
    """One scored run: its predictions and what they are predictions of."""

    model: str
    dataset: str
    ordinal: bool
    predictions: Predictions
    source: str  # the predictions file, as given
    sha256: str
    run_dir: str | None = None
    run_name: str | None = None  # the run folder's name, used to tell repeated models apart
    label: str | None = None  # the report's row label when it is not the model's (pooled folds, ensembles)
    cv: Any = None  # for pooled folds: the reports.folds.CrossValidation they come from

    @property
    def classes(self) -> tuple[str, ...]:
        return self.predictions.classes


def resolve_input(
    spec: str | Path,
    split: str = "test",
    dataset: str | None = None,
    model: str | None = None,
    ordinal: bool | None = None,
) -> RunInput:
    """Turn one command-line input into a :class:`RunInput` (UserError if it is unusable).

    ``dataset``/``model`` fill in what a bare input lacks (a config.json or a label wins);
    ``ordinal=True`` forces kappa, ``None`` decides from the config and the class names.
    """
    text = str(spec)
    label = _LABEL.match(text) if not Path(text).exists() else None
    if label:
        text = label["path"]
    path = Path(text)
    record: RunRecord | None = None
    run_dir: Path | None = None
    if path.is_dir():
        run_dir = path
        csv_path = RunDir(path).predictions(split)
        if not csv_path.is_file():
            raise UserError(f"run directory '{path}' has no predictions_{split}.csv; pass a run "
                            "directory written by accvit-med finetune or a predictions CSV")
        record = RunDir(path).record_if_any()
    elif path.is_file():
        csv_path = path
        if path.stem.startswith("predictions") and RunDir(path.parent).config_file.is_file():
            run_dir = path.parent
            record = RunDir(path.parent).record_if_any()
    else:
        raise UserError(f"input '{spec}' not found; pass a run directory, a predictions CSV "
                        "or MODEL=PATH")

    from accvit_med.training.ensemble import read_ensemble

    predictions = read_predictions(csv_path)
    ensemble = read_ensemble(csv_path.parent)  # an ensemble's folder: its label, not a run's name
    if ensemble is not None and record is None:
        run_dir = csv_path.parent
    classes = None if record is None else record.classes
    if classes is not None and list(classes) != list(predictions.classes):
        raise UserError(
            f"'{csv_path}' has classes {', '.join(predictions.classes)} but its config.json says "
            f"{', '.join(map(str, classes))}; the prob_ columns must follow the run's class order"
        )
    # An explicit label beats the run's config, which beats the caller's defaults.
    ensemble = ensemble or {}
    model = (label and label["model"]) or (record and record.model) or ensemble.get("model") or model \
        or _default_name(path)
    dataset = (label and label["dataset"]) or (record and record.dataset) or ensemble.get("dataset") or dataset \
        or UNKNOWN_DATASET
    if ordinal is None:
        ordinal = (record is not None and record.ordinal) or bool(ensemble.get("ordinal")) or \
            is_ordinal_classes(predictions.classes)
    return RunInput(
        model=str(model),
        dataset=str(dataset),
        ordinal=bool(ordinal),
        predictions=predictions,
        source=str(csv_path),
        sha256=sha256_file(csv_path),
        run_dir=None if run_dir is None else str(run_dir),
        run_name=None if run_dir is None else (run_dir.resolve().name or None),
        label=None if label or not ensemble.get("label") else str(ensemble["label"]),
    )


def _default_name(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    if path.stem.startswith("predictions"):  # predictions_test.csv says nothing: use its folder
        return path.resolve().parent.name
    return path.stem
