"""The report's operating-points section: each data set's clinical binary tasks (and ``--positive``),
thresholds chosen on validation and applied unchanged to test."""

from __future__ import annotations

from functools import partial

import numpy as np

from accvit_med.datasets.clinical import clinical_tasks
from accvit_med.reports import figures, tables
from accvit_med.reports.operating_points import BinaryTask, binary_task, positive_score
from accvit_med.reports.sections import Rendered, ReportData, TableFiles, figure_path, file_name
from accvit_med.reports.validation import validation_predictions

_PROPORTIONS = (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV"))


def tasks_for(dataset: str, classes, positive: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The declared tasks whose classes the runs have, plus ``positive`` when they have all of it."""
    tasks = {name: found for name, found in clinical_tasks(dataset).items() if set(found) <= set(classes)}
    if positive and set(positive) <= set(classes):
        tasks.setdefault("positive: " + " + ".join(positive), tuple(positive))
    return tasks


def _table(ds: str, task: str, results: dict[str, BinaryTask]) -> tables.Table:
    positive = next(iter(results.values())).positive
    table = tables.Table(
        caption=f"{ds}, {task} ({' + '.join(positive)} vs rest): thresholds chosen on validation, applied "
                "unchanged to test (sensitivity, specificity, PPV, NPV in % [95% Wilson score interval]; "
                "AUROC [95% percentile bootstrap over test images])",
        row_header="model / operating point",
        groups=[("validation", ["threshold", "sensitivity"]), ("test", ["AUROC"] + [t for _, t in _PROPORTIONS])])
    for name, result in results.items():
        auroc = tables.interval_text(result.auroc, result.auroc_ci["low"], result.auroc_ci["high"], scale=1, decimals=3)
        for point in result.points:
            cells = [f"{point.threshold:.4f}", f"{100 * point.val_sensitivity:.1f}", auroc]
            cells += [tables.interval_text(point.test[key], point.test[f"{key}_ci"]["low"],
                                           point.test[f"{key}_ci"]["high"], decimals=1) for key, _ in _PROPORTIONS]
            table.rows.append((f"{name} / {point.rule}", cells))
    return table


def operating_points_section(data: ReportData) -> Rendered:
    out, numbers = Rendered(), {}
    s = data.settings
    for ds, scores in data.datasets.items():
        tasks = tasks_for(ds, scores.classes, s.positive)
        if not tasks:
            continue
        for task, positive in tasks.items():
            results: dict[str, BinaryTask] = {}
            for run in scores.runs:
                test = run.run.predictions
                val = validation_predictions(run.run.run_dir, test.classes) if s.split != "val" else None
                if val is None:
                    continue  # the calibration section notes the missing validation predictions
                result = binary_task(task, positive, test.classes, val, test, s.n_boot, s.seed)
                if result is None:
                    out.notes.append(f"{ds}/{run.name}: no operating points for {task}: the validation "
                                     "predictions need positive and negative images to choose a threshold")
                    continue
                results[run.name] = result
                kind = f"operating_points_{file_name(task)}"
                score = positive_score(test.probs, test.classes, positive)
                out.figures[figure_path(ds, run.name, kind)] = partial(
                    figures.operating_points_figure, score, np.isin(test.labels, list(positive)),
                    result.points, f"{run.name}, {task}")
            if not results:
                continue
            numbers.setdefault(ds, {})[task] = {name: r.to_json() for name, r in results.items()}
            table = _table(ds, task, results)
            out.tables[f"{file_name(ds)}_operating_points_{file_name(task)}"] = TableFiles(table)
            links = " · ".join(f"[{name}]({figure_path(ds, name, f'operating_points_{file_name(task)}')})"
                               for name in results)
            out.markdown += [f"## Operating points: {ds}, {task}", "", tables.to_markdown(table),
                             f"ROC and precision-recall curves on test with the points marked: {links}", ""]
    out.data = numbers or None
    return out
