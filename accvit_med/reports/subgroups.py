"""Performance in subgroups (TRIPOD+AI 23a, CLAIM 38): per metadata column and level, with intervals.

The levels come from the predictions file's ``meta_<column>`` columns (the split's subgroup
metadata: HAM10000's age, sex, localization, dx_type; EyePACS's eye; a csv data set's
``--subgroups``). Ages (``age``, ``age_approx``) are binned: <30, 30-49, 50-69, >=70, unknown.

Per level: n, its share of the test set, accuracy with a Wilson score interval, macro-F1 with a
percentile bootstrap interval (rows of the level resampled), and, for a binary clinical task
(positive classes given), the prevalence of the positive class and sensitivity / specificity with
Wilson intervals. The task's decision is "the predicted class is a positive class" unless the
caller passes another (e.g. a threshold chosen on validation). Levels with fewer than
:data:`MIN_LEVEL_IMAGES` images show their numbers without interval and are left out of the
largest gap between levels, which a handful of images would dominate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from accvit_med.reports.intervals import wilson_interval
from accvit_med.reports.predictions import Predictions

MIN_LEVEL_IMAGES = 10
AGE_COLUMNS = ("age", "age_approx")
AGE_BINS = ("<30", "30-49", "50-69", ">=70", "unknown")
GAP_METRICS = ("accuracy", "macro_f1", "sensitivity", "specificity")


def age_bin(value: str) -> str:
    """An age (years, as text) in its bin; empty or unreadable ages are ``unknown``."""
    try:
        age = float(str(value).strip())
    except ValueError:
        return "unknown"
    if not math.isfinite(age) or age < 0:
        return "unknown"
    if age < 30:
        return "<30"
    if age < 50:
        return "30-49"
    if age < 70:
        return "50-69"
    return ">=70"


def levels_of(column: str, values: np.ndarray) -> np.ndarray:
    """The subgroup level of each row: binned for an age column, else the value ("" -> unknown)."""
    if column.lower() in AGE_COLUMNS:
        return np.array([age_bin(v) for v in values], dtype=object)
    return np.array([str(v).strip() or "unknown" for v in values], dtype=object)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of each row of (B, n) index arrays, over the classes present in truth or
    prediction (scikit-learn's ``f1_score(average="macro")``, 0 where undefined)."""
    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    b = y_true.shape[0]
    offsets = (np.arange(b)[:, None] * k * k)
    counts = np.bincount((offsets + y_true * k + y_pred).ravel(), minlength=b * k * k).reshape(b, k, k)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    both = counts.sum(axis=2) + counts.sum(axis=1)  # true + predicted per class = 2tp + fp + fn
    present = both > 0
    f1 = np.divide(2 * tp, both, out=np.zeros(both.shape), where=present)
    return f1.sum(axis=1) / present.sum(axis=1)


def bootstrap_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, n_boot: int,
                       rng: np.random.Generator) -> tuple[float, float]:
    """Percentile (2.5, 97.5) interval of macro-F1 over ``n_boot`` resamples of the rows."""
    rows = rng.integers(0, len(y_true), size=(n_boot, len(y_true)))
    scores = macro_f1(y_true[rows], y_pred[rows], k)
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Estimate:
    """A point estimate with its 95% interval (None: no interval, see MIN_LEVEL_IMAGES)."""

    value: Optional[float]
    low: Optional[float] = None
    high: Optional[float] = None


@dataclass
class LevelResult:
    level: str
    n: int
    share: float  # of the test set
    accuracy: Estimate
    macro_f1: Estimate
    prevalence: Optional[float] = None  # of the task's positive classes
    sensitivity: Optional[Estimate] = None
    specificity: Optional[Estimate] = None


@dataclass
class Gap:
    metric: str
    gap: float
    best: str
    worst: str


@dataclass
class ColumnResult:
    column: str
    binned: bool
    levels: list[LevelResult]
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class SubgroupAnalysis:
    """One run's subgroup table; ``to_dict`` is what report.json stores."""

    dataset: str
    run: str
    n: int
    columns: list[ColumnResult]
    task: Optional[dict] = None  # {"name", "positive", "decision"}
    min_level_images: int = MIN_LEVEL_IMAGES
    n_boot: int = 0
    seed: int = 0
    method: str = ("accuracy, sensitivity, specificity: Wilson score 95% intervals; macro-F1: "
                   "percentile bootstrap over the level's images")

    def to_dict(self) -> dict:
        return asdict(self)


def _proportion(k: int, n: int, with_interval: bool) -> Estimate:
    if n == 0:
        return Estimate(None)
    if not with_interval:
        return Estimate(k / n)
    low, high = wilson_interval(k, n)
    return Estimate(k / n, low, high)


def _level(name: str, y_true: np.ndarray, y_pred: np.ndarray, k: int, total: int, positive: Optional[np.ndarray],
           decision: Optional[np.ndarray], n_boot: int, rng: np.random.Generator, min_n: int) -> LevelResult:
    n = len(y_true)
    sure = n >= min_n
    f1 = Estimate(float(macro_f1(y_true, y_pred, k)[0]))
    if sure and n_boot > 0:
        f1.low, f1.high = bootstrap_macro_f1(y_true, y_pred, k, n_boot, rng)
    result = LevelResult(name, n, n / total, _proportion(int((y_true == y_pred).sum()), n, sure), f1)
    if positive is not None:
        truth = positive[y_true]
        result.prevalence = float(truth.mean())
        result.sensitivity = _proportion(int((decision & truth).sum()), int(truth.sum()), sure)
        result.specificity = _proportion(int((~decision & ~truth).sum()), int((~truth).sum()), sure)
    return result


def _gaps(levels: list[LevelResult], min_n: int) -> list[Gap]:
    gaps = []
    for metric in GAP_METRICS:
        scored = [(getattr(lv, metric).value, lv.level) for lv in levels
                  if lv.n >= min_n and getattr(lv, metric) is not None and getattr(lv, metric).value is not None]
        if len(scored) >= 2:
            best, worst = max(scored), min(scored)
            gaps.append(Gap(metric, best[0] - worst[0], best[1], worst[1]))
    return gaps


def compute_subgroups(
    predictions: Predictions,
    *,
    dataset: str = "",
    run: str = "",
    columns: Optional[Sequence[str]] = None,
    positive: Optional[Sequence[str]] = None,
    task_name: Optional[str] = None,
    decision: Optional[np.ndarray] = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_level_images: int = MIN_LEVEL_IMAGES,
) -> SubgroupAnalysis:
    """The subgroup table of one run's predictions (every ``meta_`` column unless ``columns``).

    Args:
        positive: the clinical task's positive classes; adds prevalence, sensitivity, specificity.
        decision: per row, whether the task calls it positive (default: predicted class positive).
        n_boot: bootstrap resamples for macro-F1's interval (0: none).
    """
    names = list(predictions.metadata) if columns is None else list(columns)
    missing = [c for c in names if c not in predictions.metadata]
    if missing:
        raise ValueError(f"predictions have no metadata column {missing[0]!r}")
    k = len(predictions.classes)
    y_true, y_pred = predictions.y_true, predictions.y_pred
    task, is_positive = None, None
    if positive:
        unknown = sorted(set(positive) - set(predictions.classes))
        if unknown:
            raise ValueError(f"positive class {unknown[0]!r} is not one of {predictions.classes}")
        is_positive = np.isin(np.asarray(predictions.classes), list(positive))
        if decision is None:
            decision = is_positive[y_pred]
            rule = "predicted class is positive"
        else:
            decision = np.asarray(decision, dtype=bool)
            rule = "given by the caller"
        task = {"name": task_name or "+".join(positive), "positive": list(positive), "decision": rule}
    rng = np.random.default_rng(seed)
    results = []
    for column in names:
        levels = levels_of(column, predictions.metadata[column])
        order = (list(AGE_BINS) if column.lower() in AGE_COLUMNS
                 else sorted(set(levels), key=lambda v: (v == "unknown", v)))
        rows = []
        for level in order:
            mask = levels == level
            if not mask.any():
                continue
            rows.append(_level(level, y_true[mask], y_pred[mask], k, len(y_true), is_positive,
                               None if decision is None else decision[mask], n_boot, rng, min_level_images))
        results.append(ColumnResult(column, column.lower() in AGE_COLUMNS, rows, _gaps(rows, min_level_images)))
    return SubgroupAnalysis(dataset, run, len(y_true), results, task, min_level_images, n_boot, seed)


# ---- rendering ------------------------------------------------------------------------------


def _pct(estimate: Optional[Estimate]) -> str:
    if estimate is None or estimate.value is None:
        return "–"
    text = f"{100 * estimate.value:.1f}"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"
    return text


def render_subgroups(analysis: SubgroupAnalysis) -> list[str]:
    """Markdown lines: one table per run (rows = column / level), then the largest gaps."""
    task = analysis.task
    header = ["subgroup", "level", "n", "share %", "accuracy % [95% CI]", "macro-F1 % [95% CI]"]
    if task:
        header += ["prevalence %", "sensitivity % [95% CI]", "specificity % [95% CI]"]
    lines = [f"### Subgroups: {analysis.run} on {analysis.dataset}", ""]
    caption = (f"{analysis.n} test images. {analysis.method}"
               + (f" ({analysis.n_boot} resamples, seed {analysis.seed})" if analysis.n_boot else " (no resamples)")
               + f". Levels under {analysis.min_level_images} images: no interval, not in the gaps.")
    if task:
        caption += (f" Binary task {task['name']} (positive: {', '.join(task['positive'])}); "
                    f"decision: {task['decision']}.")
    alignment = "|" + "|".join([":--"] * 2 + ["--:"] * (len(header) - 2)) + "|"
    lines += [caption, "", "| " + " | ".join(header) + " |", alignment]
    for column in analysis.columns:
        title = f"{column.column} (binned)" if column.binned else column.column
        for lv in column.levels:
            cells = [title, lv.level, str(lv.n), f"{100 * lv.share:.1f}", _pct(lv.accuracy), _pct(lv.macro_f1)]
            if task:
                cells += ["–" if lv.prevalence is None else f"{100 * lv.prevalence:.1f}",
                          _pct(lv.sensitivity), _pct(lv.specificity)]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    gaps = [(c.column, g) for c in analysis.columns for g in c.gaps]
    if gaps:
        lines.append("Largest gap between levels (percentage points, levels with enough images):")
        lines.append("")
        for column, g in gaps:
            lines.append(f"- {column}, {g.metric.replace('_', '-')}: {100 * g.gap:.1f} ({g.best} vs {g.worst})")
        lines.append("")
    return lines


def _tasks(dataset: str) -> dict[str, tuple[str, ...]]:
    """The data set's clinical binary tasks (its adapter's CLINICAL_TASKS), where declared."""
    from accvit_med.datasets.clinical import clinical_tasks

    return dict(clinical_tasks(dataset))


def subgroups_section(data):
    """Report section: for each run whose predictions carry metadata, its subgroup table(s), one
    per clinical task of its data set (accuracy and macro-F1 only where it declares none)."""
    from accvit_med.reports.run_sources import file_name, rendered

    markdown, numbers, files, notes = [], {}, {}, []
    for ds, scores in data.datasets.items():
        for run in scores.runs:
            predictions = run.run.predictions
            if not predictions.metadata:
                continue
            tasks = {name: classes for name, classes in _tasks(ds).items()
                     if set(classes) <= set(predictions.classes)} or {None: None}
            for task, positive in tasks.items():
                analysis = compute_subgroups(predictions, dataset=ds, run=run.name, positive=positive,
                                             task_name=task, n_boot=data.settings.n_boot, seed=data.settings.seed)
                key = f"{ds}/{run.name}" + (f"/{task}" if task else "")
                numbers[key] = analysis.to_dict()
                lines = render_subgroups(analysis)
                if task:
                    lines[0] += f" ({task})"
                markdown += lines
                stem = f"subgroups/{file_name(ds)}_{file_name(run.name)}" + (f"_{file_name(task)}" if task else "")
                files[f"{stem}.md"] = "\n".join(lines) + "\n"
    if not markdown:
        return rendered()
    return rendered(markdown=["## Subgroups", "", *markdown], files=files, data=numbers, notes=notes)
