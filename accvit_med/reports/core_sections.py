"""The report's core sections: header and inputs, Table 1, summary, per-data-set detail,
confusion matrices and notes (see ``reports/sections.py`` for the interface)."""

from __future__ import annotations

from functools import partial

import numpy as np

from accvit_med import __version__
from accvit_med.reports import figures, render, tables
from accvit_med.reports.calibration import reliability_bins
from accvit_med.reports.history import read_history
from accvit_med.reports.scoring import ScoredRun
from accvit_med.reports.sections import Rendered, ReportData, TableFiles, figure_path, file_name, json_text

_FIGURE_KINDS = ("confusion_counts", "confusion_normalized", "reliability", "roc")


def header(data: ReportData) -> Rendered:
    s, inputs = data.settings, data.inputs
    return Rendered(markdown=[
        "# accvit-med report", "",
        f"Written by accvit-med {__version__} from the {s.split} predictions of "
        f"{len(inputs)} run(s). {render.interval_methods(s)} "
        f"ECE with {s.ece_bins} equal-width bins.", "",
        "The whole report as one page, figures embedded, to open in a browser or mail: "
        "[report.html](report.html).", "",
        "## Inputs", "",
        "| dataset | name | predictions | sha256 |", "|:--|:--|:--|:--|",
        *(f"| {i['dataset']} | {i['name']} | `{i['predictions']}` | `{i['sha256']}` |" for i in inputs),
        "",
    ])


def table1_section(data: ReportData) -> Rendered:
    table = render.table1(data.datasets, per_seed=False)
    return Rendered(markdown=["## Table 1", "", tables.to_markdown(table)],
                    tables={"table1": TableFiles(table, render.table1(data.datasets, per_seed=True))})


def summary_section(data: ReportData) -> Rendered:
    table = render.summary_table(data.datasets, data.settings)
    per_seed = render.summary_table(data.datasets, data.settings, per_seed=True)
    return Rendered(markdown=["## Summary", "", tables.to_markdown(table)],
                    tables={"summary": TableFiles(table, per_seed)})


def cross_validation_section(data: ReportData) -> Rendered:
    """Each pooled cross-validation: mean ± sd over folds beside the pooled out-of-fold scores."""
    table = render.cross_validation_table(data.datasets)
    if table is None:
        return Rendered()
    numbers = {ds: [{"label": g.label, "model": g.cv.members[0].model, "manifest": g.cv.manifest, "k": g.cv.k,
                     "folds": list(g.cv.folds), "runs": [m.run_dir or m.source for m in g.cv.members],
                     "per_fold": dict(zip(g.names, g.metrics)), "mean": g.mean, "sd": g.sd}
                    for g in scores.fold_groups]
               for ds, scores in data.datasets.items() if scores.fold_groups}
    lines = ["## Cross-validation", "", tables.to_markdown(table),
             "Rows named '(K-fold CV)' elsewhere in this report are scored on the pooled out-of-fold test "
             "predictions (each image predicted once, by the model that did not train on it); paired "
             "comparisons use those pooled predictions on the same images.", ""]
    return Rendered(markdown=lines, data=numbers,
                    tables={"cross_validation": TableFiles(table, render.cross_validation_table(data.datasets, True))})


def _curves_path(dataset: str, name: str) -> str:
    return f"figures/{file_name(dataset)}/{file_name(name)}_curves.png"


def _overlay_path(dataset: str) -> str:
    return f"figures/{file_name(dataset)}/curves_overlay.png"


def _run_figures(ds: str, run: ScoredRun, ece_bins: int) -> dict:
    p, m = run.run.predictions, run.metrics
    title = f"{run.name} on {ds}"
    cm = np.asarray(m["confusion_matrix"])
    auc = [m["per_class"][c]["auc"] for c in p.classes]
    drawers = {
        "confusion_counts": partial(figures.confusion_figure, cm, p.classes, normalize=False, title=title),
        "confusion_normalized": partial(figures.confusion_figure, cm, p.classes, normalize=True, title=title),
        "reliability": lambda: figures.reliability_figure(reliability_bins(p.probs, p.y_true, ece_bins), title),
        "roc": partial(figures.roc_figure, p.probs, p.y_true, p.classes, auc, title),
    }
    return {figure_path(ds, run.name, kind): drawer for kind, drawer in drawers.items()}


def datasets_section(data: ReportData) -> Rendered:
    """Per data set: Tables 5-7, sensitivity/specificity/AUC, paired differences, each run's
    figures and metrics JSON, seed groups and learning curves."""
    out = Rendered()
    for ds, scores in data.datasets.items():
        stem = file_name(ds)
        runs = {label: metrics for label, _, metrics, _ in render.entries(scores)}
        grouped = {group.label for group in scores.seed_groups}
        detail = {f"{stem}_per_class": tables.per_class_table(ds, runs),
                  f"{stem}_sensitivity_specificity_auc": tables.clinical_table(ds, runs, grouped)}
        paired = render.paired_table(ds, scores.comparisons, data.settings.n_boot)
        if paired is not None:
            detail[f"{stem}_paired"] = paired
        out.tables.update({name: TableFiles(table) for name, table in detail.items()})
        out.markdown += [f"## {ds}", "", *(tables.to_markdown(table) for table in detail.values())]
        histories = [(run.name, history) for run in scores.runs
                     if (history := read_history(run.run.run_dir)) is not None]
        for run in scores.runs:
            out.figures.update(_run_figures(ds, run, data.settings.ece_bins))
            out.files[f"metrics/{stem}/{file_name(run.name)}.json"] = json_text(run.metrics)
            links = " · ".join(f"[{kind.replace('_', ' ')}]({figure_path(ds, run.name, kind)})"
                               for kind in _FIGURE_KINDS)
            if any(name == run.name for name, _ in histories):
                links += f" · [learning curves]({_curves_path(ds, run.name)})"
            out.markdown.append(f"- {run.name}: {links}")
        out.markdown.append("")
        for group in scores.seed_groups:
            out.markdown.append(f"- {group.label}: mean ± sd over seeds {', '.join(map(str, group.seeds))} "
                                f"(runs {', '.join(group.names)}); paired comparisons pair runs of the same seed")
        for name, history in histories:
            out.figures[_curves_path(ds, name)] = partial(figures.curves_figure, history, f"{name} on {ds}")
        if histories:
            out.figures[_overlay_path(ds)] = partial(figures.curves_overlay_figure, histories, ds)
            out.markdown += ["", f"![learning curves of every run on {ds}]({_overlay_path(ds)})"]
        out.markdown.append("")
    return out


def confusion_grid_section(data: ReportData) -> Rendered:
    """Figure 5's layout: one row per data set, one column per model."""
    names: list[str] = []
    for scores in data.datasets.values():
        names += [run.name for run in scores.runs if run.name not in names]
    cells = [[next(((np.asarray(r.metrics["confusion_matrix"]), r.run.classes)
                    for r in scores.runs if r.name == name), None) for name in names]
             for scores in data.datasets.values()]
    drawer = partial(figures.confusion_grid_figure, cells, list(data.datasets), names)
    return Rendered(markdown=["## Confusion matrices", "", "![confusion matrices](figures/confusion_grid.png)", ""],
                    figures={"figures/confusion_grid.png": drawer})


def notes_section(data: ReportData) -> Rendered:
    return Rendered(markdown=["## Notes", ""] + ([f"- {note}" for note in data.notes] or ["- none"]))
