"""Ensembles of finished runs: the mean of their probabilities on the same images.

Each member's probabilities are calibrated first when every member can be: temperature scaling
(:mod:`accvit_med.reports.temperature`) fitted on the member's own ``predictions_val.csv``; otherwise
(or with ``calibrate=False``) the raw softmax outputs are averaged. The ensemble is written as an
ordinary predictions file, with ``ensemble.json`` beside it naming the members, the temperatures and
the row label the report gives it (``accvit_tiny (5-fold ensemble)``, ``(3-seed ensemble)``...).
Torch-free: the members' predictions are made by ``evaluate``/``predict`` before this runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from accvit_med import __version__
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, sha256_file
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_KIND = "accvit-med ensemble"


@dataclass(frozen=True)
class Member:
    run: Path
    record: RunRecord
    temperature: Optional[float] = None


def load_members(runs: Sequence[str | os.PathLike], same_split: bool) -> list[Member]:
    """The members' records, checked: at least two distinct runs with one set of classes and, when
    ``same_split``, one split file (same sha256)."""
    paths = [Path(r) for r in runs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise UserError("a run is given twice to --run; an ensemble needs distinct runs")
    members = [Member(p, RunDir(p).record(kind="finetune")) for p in paths]
    first = members[0]
    for member in members[1:]:
        if set(member.record.classes or ()) != set(first.record.classes or ()):
            raise UserError(f"runs '{first.run}' and '{member.run}' have different classes "
                            f"({', '.join(first.record.classes or ())} vs {', '.join(member.record.classes or ())}); "
                            "an ensemble's runs must share their classes")
        if same_split and (member.record.split is None or first.record.split is None
                           or member.record.split.sha256 != first.record.split.sha256):
            raise UserError(f"runs '{first.run}' and '{member.run}' were trained on different splits; an ensemble "
                            "on the internal test needs one split (score fold models together on external data)")
    return members


def with_temperatures(members: Sequence[Member], calibrate: bool) -> tuple[list[Member], list[str]]:
    """Members with the temperature fitted on their validation predictions, when all have them."""
    from accvit_med.reports.predictions import read_predictions
    from accvit_med.reports.temperature import fit_temperature

    if not calibrate:
        return list(members), []
    missing = [m.run for m in members if not RunDir(m.run).predictions("val").is_file()]
    if missing:
        return list(members), [f"raw probabilities averaged: run '{missing[0]}' has no predictions_val.csv "
                               "to fit its temperature on"]
    fitted = []
    for m in members:
        val = read_predictions(RunDir(m.run).predictions("val"))
        fitted.append(Member(m.run, m.record, fit_temperature(val.probs, val.y_true)))
    return fitted, []


def ensemble_label(members: Sequence[Member]) -> tuple[str, str]:
    """(row label, model): 'model (K-fold ensemble)' for every fold of one CV, '(n-seed ensemble)'
    for one recipe over seeds, '(n-run ensemble)' otherwise; several models: 'ensemble (a + b)'."""
    from accvit_med.datasets.folds import fold_of_split

    n = len(members)
    models = list(dict.fromkeys(str(m.record.model) for m in members))
    if len(models) > 1:
        return f"ensemble ({' + '.join(models)})", "ensemble"
    model = models[0]
    folds = [fold_of_split(m.record.split.existing(), m.record.split.sha256) if m.record.split else None
             for m in members]
    if all(folds) and len({str(f[0].resolve()) for f in folds}) == 1 and \
            sorted(f[2] for f in folds) == list(range(1, int(folds[0][1]["k"]) + 1)):
        return f"{model} ({n}-fold ensemble)", model
    recipes = [m.record.recipe for m in members]
    if all(r is not None for r in recipes):
        rest = {m.record.seedless_recipe_key() for m in members}
        if len(rest) == 1 and len({r.seed for r in recipes}) == n:
            return f"{model} ({n}-seed ensemble)", model
    return f"{model} ({n}-run ensemble)", model


def mean_probabilities(probabilities: Sequence[np.ndarray], temperatures: Sequence[Optional[float]]) -> np.ndarray:
    """The mean of the members' (n, k) probabilities, each temperature-scaled where a T is given."""
    from accvit_med.reports.temperature import apply_temperature

    return np.mean([p if t is None else apply_temperature(p, t) for p, t in zip(probabilities, temperatures)], axis=0)


def average(files: Sequence[Path], classes: Sequence[str], temperatures: Sequence[Optional[float]]):
    """The members' predictions files as one ``Predictions``: rows in the first file's order, columns
    in ``classes`` order, probabilities the mean of each member's (temperature-scaled where given)."""
    from accvit_med.reports.predictions import Predictions, read_predictions

    read = [read_predictions(f).with_class_order(classes) for f in files]
    first = read[0]
    position = {p: i for i, p in enumerate(first.paths.tolist())}
    stacked = []
    for path, p, t in zip(files, read, temperatures):
        if len(p) != len(first) or set(p.paths.tolist()) != set(position):
            only = sorted(set(p.paths.tolist()) ^ set(position))
            raise UserError(f"'{files[0]}' and '{path}' do not hold the same images (e.g. '{only[0]}' is in one "
                            "only); an ensemble averages predictions of the same images")
        order = np.argsort([position[x] for x in p.paths.tolist()], kind="stable")
        p = p.take(order)
        if (p.labels != first.labels).any():
            raise UserError(f"'{files[0]}' and '{path}' disagree on the true label of an image; they were "
                            "scored against different ground truth")
        stacked.append(p.probs)
    probs = mean_probabilities(stacked, temperatures)
    preds = np.asarray(classes, dtype=object)[probs.argmax(axis=1)].astype(str)
    return Predictions(first.paths, first.labels, preds, probs, tuple(classes), metadata=first.metadata)


def write_ensemble(out: Path, file_name: str, predictions, members: Sequence[Member], member_files: Sequence[Path],
                   info: dict, ordinal: bool) -> tuple[Path, dict]:
    """``out/<file_name>`` (the averaged predictions), ``out/metrics.json`` and ``out/ensemble.json``."""
    from accvit_med.reports import classification_metrics
    from accvit_med.reports.predictions import write_predictions

    label, model = ensemble_label(members)
    classes = list(predictions.classes)
    path = out / file_name
    write_predictions(path, predictions.paths, predictions.labels, predictions.preds, predictions.probs, classes,
                      metadata=dict(predictions.metadata))
    metrics = classification_metrics(predictions.labels, predictions.preds, predictions.probs, classes, ordinal,
                                     warn=False)
    description = {
        "kind": ENSEMBLE_KIND, "label": label, "model": model, "classes": classes, "ordinal": ordinal,
        "calibrated": all(m.temperature is not None for m in members),
        "members": [{"run": str(m.run), "model": m.record.model, "predictions": str(f), "sha256": sha256_file(f),
                     "temperature": m.temperature} for m, f in zip(members, member_files)],
        "tool_version": __version__, **info,
    }
    metrics["ensemble"] = {"label": label, "members": len(members), "calibrated": description["calibrated"]}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / ENSEMBLE_FILE, description)
    return path, metrics


def read_ensemble(folder: Path) -> Optional[dict]:
    """``ensemble.json`` of a folder, or None when there is none (or it is not ours)."""
    try:
        found = json.loads((folder / ENSEMBLE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return found if isinstance(found, dict) and found.get("kind") == ENSEMBLE_KIND else None
