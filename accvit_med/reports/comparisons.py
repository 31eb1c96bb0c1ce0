"""Paired comparisons: each reference run (ACC-ViT by default) minus every other run of its data set.

Both runs are scored on the same bootstrap resamples of the same test images, so the interval of
the difference is the percentile interval of the per-resample differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from accvit_med.reports.bootstrap import paired_difference
from accvit_med.reports.ordering import is_accvit

COMPARED_METRICS = ("accuracy", "macro_f1", "macro_auc", "quadratic_weighted_kappa")
METRIC_TITLES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "macro_auc": "Macro-AUC",
                 "quadratic_weighted_kappa": "QW kappa"}


@dataclass(frozen=True)
class Comparison:
    """``reference`` minus ``baseline`` on ``metric``: estimate, bootstrap interval and p-value."""

    dataset: str
    reference: str
    baseline: str
    metric: str
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    significant: bool | None  # the interval excludes 0

    def to_json(self) -> dict:
        return asdict(self)


def compare(dataset: str, scored: list, distributions: list[dict[str, np.ndarray]],
            reference: str | None) -> tuple[list[Comparison], list[str]]:
    """Comparisons of one data set's scored runs (objects with .name, .run, .metrics, .group, .seed)
    and notes; ``reference`` names the compared model (None: every ACC-ViT run)."""
    if reference is None:
        references = [i for i, run in enumerate(scored) if is_accvit(run.run.model)]
    else:
        references = [i for i, run in enumerate(scored) if reference in (run.name, run.run.model)]
    if not references:
        missing = "no ACC-ViT run" if reference is None else f"no run named '{reference}'"
        return [], [f"{dataset}: {missing}, so no paired comparisons (name one with --reference)"]
    comparisons = []
    for i in references:
        for j, other in enumerate(scored):
            if j in references:
                continue
            if scored[i].group and other.group and scored[i].seed != other.seed:
                continue  # seeds are paired: each seed's reference run against the same seed's baseline
            for metric in COMPARED_METRICS:
                if metric not in distributions[i]:
                    continue
                a, b = scored[i].metrics[metric], other.metrics[metric]
                estimate = None if a is None or b is None else a - b
                comparisons.append(Comparison(
                    dataset, scored[i].name, other.name, metric,
                    **paired_difference(distributions[i][metric], distributions[j][metric], estimate)))
    return comparisons, []
