"""External validation in the report: each run's ``<run>/external/<name>/`` results, in a section
of their own and never pooled with the internal test (TRIPOD+AI 12, 23; CLAIM 32).

Per external evaluation: the images evaluated, what was left out (target classes the run does not
know, images and lesions the run has seen), accuracy with a Wilson score interval, macro-F1 with
a percentile bootstrap interval over the external images, macro-AUC and balanced accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from accvit_med.reports.intervals import wilson_interval
from accvit_med.reports.predictions import read_predictions
from accvit_med.reports.run_sources import ExternalEvaluation, external_evaluations, rendered
from accvit_med.reports.subgroups import Estimate, bootstrap_macro_f1


@dataclass
class ExternalSummary:
    dataset: str  # the run's (internal) data set
    run: str
    name: str  # the external evaluation's name
    external_dataset: str
    n: int
    accuracy: Estimate
    macro_f1: Estimate
    macro_auc: Optional[float]
    balanced_accuracy: Optional[float]
    images_listed: int
    unmatched_classes: dict[str, int]
    overlap: dict
    lines: list[str] = field(default_factory=list)
    method: str = "accuracy: Wilson score 95% interval; macro-F1: percentile bootstrap over the external images"

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(dataset: str, run: str, evaluation: ExternalEvaluation, n_boot: int, seed: int) -> ExternalSummary:
    m, info = evaluation.metrics, evaluation.metrics["external"]
    predictions = read_predictions(evaluation.predictions)
    y_true, y_pred = predictions.y_true, predictions.y_pred
    n = len(y_true)
    correct = int((y_true == y_pred).sum())
    accuracy = Estimate(correct / n, *wilson_interval(correct, n))
    f1 = Estimate(float(m["macro_f1"]))
    if n_boot > 0:
        f1.low, f1.high = bootstrap_macro_f1(y_true, y_pred, len(predictions.classes), n_boot,
                                             np.random.default_rng(seed))
    return ExternalSummary(dataset, run, evaluation.name, str(info.get("dataset")), n, accuracy, f1,
                           m.get("macro_auc"), m.get("balanced_accuracy"), int(info.get("images_listed", n)),
                           dict(info.get("unmatched_classes", {})), dict(info.get("overlap", {})),
                           list(info.get("lines", [])))


def _pct(e: Optional[Estimate]) -> str:
    if e is None or e.value is None:
        return "–"
    if e.low is None:
        return f"{100 * e.value:.1f}"
    return f"{100 * e.value:.1f} [{100 * e.low:.1f}, {100 * e.high:.1f}]"


def render_external(summaries: list[ExternalSummary], n_boot: int, seed: int) -> list[str]:
    lines = [
        "Scored on data sets the runs never trained on (`accvit-med evaluate --dataset`); reported apart from, "
        f"and never pooled with, the internal test. {summaries[0].method} ({n_boot} resamples, seed {seed}).", "",
        "| data set / run | external set | images listed | evaluated | accuracy % [95% CI] | macro-F1 % [95% CI] "
        "| macro-AUC % | balanced acc % |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        auc = "–" if s.macro_auc is None else f"{100 * s.macro_auc:.1f}"
        bal = "–" if s.balanced_accuracy is None else f"{100 * s.balanced_accuracy:.1f}"
        lines.append(f"| {s.dataset} / {s.run} | {s.name} ({s.external_dataset}) | {s.images_listed} | {s.n} | "
                     f"{_pct(s.accuracy)} | {_pct(s.macro_f1)} | {auc} | {bal} |")
    lines.append("")
    for s in summaries:
        for line in s.lines:
            lines.append(f"- {s.dataset} / {s.run} on {s.name}: {line}")
    lines.append("")
    return lines


def external_section(data):
    """Report section: every external evaluation of the report's runs."""
    n_boot, seed = data.settings.n_boot, data.settings.seed
    summaries = [summarise(ds, run.name, evaluation, n_boot, seed)
                 for ds, scores in data.datasets.items() for run in scores.runs
                 for evaluation in external_evaluations(run.run.run_dir)]
    if not summaries:
        return rendered()
    return rendered(markdown=["## External validation", "", *render_external(summaries, n_boot, seed)],
                    data={"evaluations": [s.to_dict() for s in summaries]})
