"""Scoring one data set's runs: checked and aligned inputs, metrics, shared bootstrap resamples.

Each data set's runs must share one class set. Rows are sorted by image path, so row order in the
files does not matter, and runs on the same test images share the same bootstrap resamples:
their confidence intervals and the paired differences come from one set of resamples.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from accvit_med.errors import UserError
from accvit_med.reports import folds, seeds
from accvit_med.reports.bootstrap import CI_LEVEL, bootstrap_scores
from accvit_med.reports.comparisons import Comparison, compare
from accvit_med.reports.metrics import classification_metrics, confidence_intervals
from accvit_med.reports.ordering import DETAIL_BASELINES, model_key
from accvit_med.reports.runs import RunInput
from accvit_med.reports.settings import ReportSettings


@dataclass
class ScoredRun:
    name: str  # the row label: the model, or model@run when a model appears twice
    run: RunInput
    metrics: dict
    group: str | None = None  # the seed group's label when the run is one of several seeds
    seed: int | None = None
    folds: folds.FoldScores | None = None  # a pooled cross-validation: each fold's own scores


@dataclass
class DatasetScores:
    """One data set of the report: its runs in the paper's order and what was computed from them."""

    name: str
    runs: list[ScoredRun]
    comparisons: list[Comparison] = field(default_factory=list)
    seed_groups: list[seeds.SeedGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fold_groups(self) -> list[folds.FoldScores]:
        return [run.folds for run in self.runs if run.folds is not None]

    @property
    def classes(self) -> list[str]:
        return self.runs[0].metrics["classes"]

    @property
    def ordinal(self) -> bool:
        return self.runs[0].metrics["ordinal"]


def score_dataset(name: str, runs: list[RunInput], settings: ReportSettings) -> DatasetScores:
    """Check, align and score one data set's runs; comparisons when ``settings.paired``."""
    group = _prepare_dataset(name, runs, settings.paired)
    scored, distributions = _score(group, settings)
    result = DatasetScores(name, scored, seed_groups=_assign_seed_groups(scored))
    for run in scored:
        if run.run.cv is not None:
            run.folds = folds.fold_scores(run.name, run.run.cv, run.metrics["classes"], run.metrics["ordinal"],
                                          settings.ece_bins)
    for run in scored:
        result.notes += [f"{name}/{run.name}: {note}" for note in run.metrics["notes"]]
    single = [c for c, s in scored[0].metrics["per_class"].items() if s["support"] == 1]
    if settings.n_boot > 0 and settings.bootstrap == "stratified" and single:
        # Resampling within a class of one image always redraws that image.
        result.notes.append(f"{name}: class(es) {', '.join(single)} have one test image each, which the "
                            "stratified bootstrap cannot vary: intervals are too narrow")
    if settings.paired and settings.n_boot > 0 and len(scored) > 1:
        result.comparisons, notes = compare(name, scored, distributions, settings.reference)
        result.notes += notes
    return result


def _assign_seed_groups(scored: list[ScoredRun]) -> list[seeds.SeedGroup]:
    groups = seeds.find_groups(scored)
    for group in groups:
        for run in scored:
            if run.name in group.names:
                run.group, run.seed = group.label, group.seeds[group.names.index(run.name)]
    return groups


def _prepare_dataset(name: str, group: list[RunInput], paired: bool) -> list[tuple[str, RunInput]]:
    """Check class sets, align class order, sort rows by path, name the rows, check pairing."""
    first = group[0]
    aligned = []
    for run in group:
        if set(run.classes) != set(first.classes):
            raise UserError(
                f"'{first.source}' and '{run.source}' are both in dataset '{name}' but have "
                f"different classes ({', '.join(first.classes)} vs {', '.join(run.classes)}); "
                "report them separately or label them DATASET/MODEL=PATH"
            )
        predictions = run.predictions.with_class_order(first.classes)
        predictions = predictions.take(np.argsort(predictions.paths, kind="stable"))
        aligned.append(replace(run, predictions=predictions))
    aligned.sort(key=lambda run: model_key(run.model, DETAIL_BASELINES, accvit_first=True))

    counts = Counter(run.model for run in aligned)
    named = []
    for run in aligned:
        suffix = run.run_name or Path(run.source).stem
        named.append((run.label or (run.model if counts[run.model] == 1 else f"{run.model}@{suffix}"), run))
    seen: dict[str, RunInput] = {}
    for label, run in named:
        if label in seen:
            raise UserError(f"'{seen[label].source}' and '{run.source}' would both be '{label}' in "
                            f"dataset '{name}'; label them MODEL=PATH with different names")
        seen[label] = run

    if paired and len(aligned) > 1:
        _check_same_rows(aligned)
    return named


def _check_same_rows(runs: list[RunInput]) -> None:
    reference = runs[0].predictions
    repeated = [p for p, c in Counter(reference.paths.tolist()).items() if c > 1]
    if repeated:
        raise UserError(f"'{runs[0].source}' lists '{repeated[0]}' more than once; paired "
                        "comparisons need one row per image (or pass --no-paired)")
    for run in runs[1:]:
        other = run.predictions
        if len(other) != len(reference) or not np.array_equal(other.paths, reference.paths):
            only = sorted(set(reference.paths.tolist()) ^ set(other.paths.tolist()))
            example = f", e.g. '{only[0]}' is in one only" if only else ""
            raise UserError(
                f"'{runs[0].source}' ({len(reference)} rows) and '{run.source}' ({len(other)} rows) "
                f"do not hold the same test images{example}; paired comparisons need one test set "
                "(or pass --no-paired)"
            )
        differs = np.flatnonzero(other.labels != reference.labels)
        if differs.size:
            path = reference.paths[differs[0]]
            raise UserError(f"'{runs[0].source}' and '{run.source}' disagree on the true label of "
                            f"'{path}'; they were scored against different ground truth")


def _score(group: list[tuple[str, RunInput]],
           settings: ReportSettings) -> tuple[list[ScoredRun], list[dict[str, np.ndarray]]]:
    ordinal = any(run.ordinal for _, run in group)
    classes = list(group[0][1].classes)
    k, n_boot, seed = len(classes), settings.n_boot, settings.seed
    distributions: list[dict[str, np.ndarray]] = [{} for _ in group]
    if n_boot > 0:
        if settings.paired:
            # Same rows (checked), same seed: the runs share every resample.
            y_true = group[0][1].predictions.y_true
            distributions = bootstrap_scores(
                y_true, [(run.predictions.y_pred, run.predictions.probs) for _, run in group],
                k, n_boot, seed, ordinal, settings.bootstrap)
        else:
            distributions = [
                bootstrap_scores(run.predictions.y_true, [(run.predictions.y_pred, run.predictions.probs)],
                                 k, n_boot, seed, ordinal, settings.bootstrap)[0]
                for _, run in group
            ]
    scored = []
    for (name, run), distribution in zip(group, distributions):
        p = run.predictions
        metrics = classification_metrics(p.labels, p.preds, p.probs, classes, ordinal,
                                         ece_bins=settings.ece_bins, warn=False)
        if n_boot > 0:
            metrics["ci"] = confidence_intervals(distribution)
            metrics.update(bootstrap=settings.bootstrap, ci_level=CI_LEVEL, n_boot=n_boot, seed=seed)
        scored.append(ScoredRun(name, run, metrics))
    return scored, distributions
