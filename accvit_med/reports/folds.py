"""Runs over the folds of one cross-validation, as one entry of the report.

A run belongs to fold k of a cross-validation when the split its record names sits beside a
``cv.json`` (written by ``accvit-med split --folds K``) that lists that split's sha256 as fold k.
Runs of one model and data set over the folds of one CV, with equal recipes once the split and the
settings that only say how a run ran are set aside, are pooled: their test predictions are
concatenated into one input (every image of the data set once: the out-of-fold predictions), which
the report scores, bootstraps and compares like any run; each fold's own metrics give the mean and
sd over folds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from accvit_med.datasets.folds import fold_of_split
from accvit_med.errors import UserError
from accvit_med.reports.predictions import Predictions
from accvit_med.reports.runs import RunInput
from accvit_med.rundir.layout import RunDir


@dataclass(frozen=True)
class CrossValidation:
    """What a pooled input is made of: its CV manifest, K, and one member run per fold."""

    manifest: str  # the cv.json, as found
    k: int
    folds: tuple[int, ...]  # fold numbers present, ascending
    members: tuple[RunInput, ...]  # the runs, in fold order
    seed: Optional[int] = None

    @property
    def complete(self) -> bool:
        return self.folds == tuple(range(1, self.k + 1))

    def label(self, model: str) -> str:
        """The row label: 'model (5-fold CV)', or 'model (folds 1, 3 of 5)' when folds are missing."""
        what = f"{self.k}-fold CV" if self.complete else f"folds {', '.join(map(str, self.folds))} of {self.k}"
        return f"{model} ({what}{'' if self.seed is None else f', seed {self.seed}'})"

    def member_name(self, label: str, fold: int) -> str:
        return f"{label} fold{fold}"


def run_fold(run: RunInput) -> Optional[tuple[str, int, int, Optional[int], str]]:
    """(cv.json path, K, fold, seed, recipe key) of a run on a fold of a CV; None otherwise."""
    if run.run_dir is None:
        return None
    try:
        record = RunDir(Path(run.run_dir)).record_if_any()
    except (OSError, UserError):
        return None
    if record is None or record.split is None:
        return None
    found = None
    for candidate in (record.split.path, record.split.absolute_path):
        found = fold_of_split(candidate, record.split.sha256)
        if found is not None:
            break
    if found is None:
        return None
    cv_path, cv, fold = found
    seed, key = None, ""
    if record.task == "finetune" and record.recipe is not None:
        seed, key = int(record.recipe.seed), record.seedless_recipe_key()
    return str(cv_path.resolve()), int(cv["k"]), fold, seed, key


def pool(runs: Sequence[RunInput]) -> tuple[list[RunInput], list[str]]:
    """``runs`` with the runs on folds of one CV replaced by one pooled input each, and notes.

    The pooled input takes the place of its first member; runs that are not on a fold stay as they
    are. Two runs on the same fold with the same recipe cannot be pooled: they stay separate (noted).
    """
    found = {i: run_fold(run) for i, run in enumerate(runs)}
    members: dict[tuple, list[tuple[int, int]]] = {}
    for i, run in enumerate(runs):
        if found[i] is not None:
            cv_path, k, fold, seed, key = found[i]
            members.setdefault((run.dataset, run.model, cv_path, k, seed, key), []).append((fold, i))
    by_seed: dict[tuple, set] = {}
    for dataset, model, cv_path, k, seed, key in members:
        by_seed.setdefault((dataset, model, cv_path, k, key), set()).add(seed)
    notes: list[str] = []
    replaced: dict[int, Optional[RunInput]] = {}
    for group_key, group in members.items():
        dataset, model, cv_path, k, seed, key = group_key
        folds = [fold for fold, _ in group]
        if len(set(folds)) != len(folds):
            notes.append(f"{dataset}/{model}: several runs on one fold of {cv_path} with the same recipe and seed; "
                         "they are reported separately, not pooled")
            continue
        group.sort()
        several_seeds = len(by_seed[(dataset, model, cv_path, k, key)]) > 1
        cv = CrossValidation(cv_path, k, tuple(sorted(folds)), tuple(runs[i] for _, i in group),
                             seed if several_seeds else None)
        pooled = pooled_input(cv)
        if not cv.complete:
            notes.append(f"{dataset}/{pooled.model}: runs on {len(folds)} of the {k} folds of {cv_path}; "
                         "the pooled out-of-fold predictions cover those folds' test images only")
        replaced[group[0][1]] = pooled
        for _, i in group[1:]:
            replaced[i] = None
    out = [replaced.get(i, run) for i, run in enumerate(runs)]
    return [run for run in out if run is not None], notes


def pooled_input(cv: CrossValidation) -> RunInput:
    """The members' test predictions concatenated (fold order) as one input named after the CV."""
    first = cv.members[0]
    classes = first.predictions.classes
    parts = []
    for run in cv.members:
        if set(run.classes) != set(classes):
            raise UserError(f"'{first.source}' and '{run.source}' are folds of one cross-validation but have "
                            f"different classes ({', '.join(classes)} vs {', '.join(run.classes)})")
        parts.append(run.predictions.with_class_order(classes))
    paths = np.concatenate([p.paths for p in parts])
    if len(set(paths.tolist())) != len(paths):
        raise UserError(f"the test predictions of the folds of {cv.manifest} ({first.model}) list an image twice; "
                        "the fold files were not written by one accvit-med split --folds run")
    shared = [k for k in parts[0].metadata if all(k in p.metadata for p in parts)]
    predictions = Predictions(
        paths, np.concatenate([p.labels for p in parts]), np.concatenate([p.preds for p in parts]),
        np.concatenate([p.probs for p in parts]), tuple(classes), source=cv.manifest,
        metadata={k: np.concatenate([p.metadata[k] for p in parts]) for k in shared})
    label = cv.label(first.model)
    return replace(first, predictions=predictions, source=cv.manifest,
                   sha256=_combined_sha(cv.members), run_dir=None, run_name=label, label=label, cv=cv)


def _combined_sha(members: Sequence[RunInput]) -> str:
    import hashlib

    return hashlib.sha256("".join(run.sha256 for run in members).encode()).hexdigest()


@dataclass
class FoldScores:
    """The per-fold side of a pooled row: each fold's metrics, their mean and sd (ddof=1)."""

    label: str
    cv: CrossValidation
    names: list[str]  # one per fold: 'label foldK'
    metrics: list[dict]
    mean: dict
    sd: dict


def fold_scores(label: str, cv: CrossValidation, classes: Sequence[str], ordinal: bool, ece_bins: int) -> FoldScores:
    """Score each fold's own test predictions (in ``classes`` order) and average them."""
    from accvit_med.reports.metrics import classification_metrics
    from accvit_med.reports.seeds import mean_metrics

    metrics = []
    for run in cv.members:
        p = run.predictions.with_class_order(classes)
        metrics.append(classification_metrics(p.labels, p.preds, p.probs, list(classes), ordinal,
                                              ece_bins=ece_bins, warn=False))
    mean, sd = mean_metrics(metrics)
    return FoldScores(label, cv, [cv.member_name(label, f) for f in cv.folds], metrics, mean, sd)
