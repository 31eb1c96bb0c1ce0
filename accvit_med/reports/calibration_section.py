"""The report's calibration section: temperature scaling fitted on validation, applied to test.

For every run with validation predictions: T (fitted on validation by NLL), and ECE, Brier score
and NLL on the test set before and after, each with a percentile bootstrap interval over test
images; a reliability diagram with both; and the calibrated probabilities as
``calibrated/<dataset>/<run>/predictions_{val,test}_calibrated.csv`` in the report folder (the
run's own files are never rewritten).
"""

from __future__ import annotations

import math
from functools import partial

from accvit_med.reports import figures, tables
from accvit_med.reports.bootstrap import percentile_interval, row_weights
from accvit_med.reports.calibration import reliability_bins
from accvit_med.reports.predictions import Predictions, predictions_csv
from accvit_med.reports.sections import Rendered, ReportData, TableFiles, figure_path, file_name
from accvit_med.reports.settings import ReportSettings
from accvit_med.reports.temperature import (
    LOG_T_BOUND,
    apply_temperature,
    brier_score,
    calibration_distributions,
    fit_temperature,
    negative_log_likelihood,
)
from accvit_med.reports.validation import validation_predictions

SCORES = (("ece", "ECE %", 100), ("brier", "Brier", 1), ("nll", "NLL", 1))


def calibration_scores(probs, y_true, settings: ReportSettings) -> dict:
    """ECE, Brier and NLL, each with its row-bootstrap interval (None without resamples)."""
    found = {"ece": reliability_bins(probs, y_true, settings.ece_bins)["ece"],
             "brier": brier_score(probs, y_true), "nll": negative_log_likelihood(probs, y_true)}
    intervals = {name: {"low": None, "high": None} for name in found}
    if settings.n_boot > 0:
        weights = row_weights(len(y_true), settings.n_boot, settings.seed)
        for name, samples in calibration_distributions(probs, y_true, settings.ece_bins, weights).items():
            low, high = percentile_interval(samples)
            intervals[name] = {"low": low, "high": high}
    return {**found, "ci": intervals}


def _calibrated_csv(p: Predictions, probs) -> str:
    return predictions_csv(p.paths, p.labels, p.preds, probs, p.classes)


def _calibrate(ds: str, name: str, val: Predictions, test: Predictions, settings: ReportSettings,
               out: Rendered) -> dict:
    """Fit T on ``val``, score ``test`` before and after; the files and figure go into ``out``."""
    t = fit_temperature(val.probs, val.y_true)
    if abs(abs(math.log(t)) - LOG_T_BOUND) < 1e-3:
        out.notes.append(f"{ds}/{name}: the fitted temperature {t:.3g} is at the search bound "
                         "(validation predictions separable or degenerate)")
    val_calibrated, test_calibrated = apply_temperature(val.probs, t), apply_temperature(test.probs, t)
    folder = f"calibrated/{file_name(ds)}/{file_name(name)}"
    out.files[f"{folder}/predictions_val_calibrated.csv"] = _calibrated_csv(val, val_calibrated)
    out.files[f"{folder}/predictions_test_calibrated.csv"] = _calibrated_csv(test, test_calibrated)
    bins = settings.ece_bins
    out.figures[figure_path(ds, name, "reliability_calibrated")] = partial(
        figures.reliability_comparison_figure, reliability_bins(test.probs, test.y_true, bins),
        reliability_bins(test_calibrated, test.y_true, bins), t, f"{name} on {ds}")
    return {"temperature": t, "n_val": len(val), "n_test": len(test),
            "test_raw": calibration_scores(test.probs, test.y_true, settings),
            "test_calibrated": calibration_scores(test_calibrated, test.y_true, settings),
            "val_nll_raw": negative_log_likelihood(val.probs, val.y_true),
            "val_nll_calibrated": negative_log_likelihood(val_calibrated, val.y_true)}


def _table(ds: str, rows: dict, settings: ReportSettings) -> tables.Table:
    table = tables.Table(
        caption=f"Calibration on {ds}: temperature T fitted on validation (NLL); test ECE (%, "
                f"{settings.ece_bins} equal-width bins), multi-class Brier score and NLL (nats), raw and "
                "calibrated [95% percentile bootstrap over test images]",
        row_header="model", decimals=4,
        groups=[("", ["T", "n val"]), *((title, ["raw", "calibrated"]) for _, title, _ in SCORES)])
    for name, found in rows.items():
        cells: list[tables.Cell] = [found["temperature"], found["n_val"]]
        for key, _, scale in SCORES:
            for part in (found["test_raw"], found["test_calibrated"]):
                ci = part["ci"][key]
                cells.append(tables.interval_text(part[key], ci["low"], ci["high"], scale=scale,
                                                  decimals=2 if scale == 100 else 4))
        table.rows.append((name, cells))
    return table


def calibration_section(data: ReportData) -> Rendered:
    out, numbers = Rendered(), {}
    if data.settings.split == "val":
        out.notes.append("calibration skipped: the report reads validation predictions, on which the "
                         "temperature would be fitted")
        return out
    for ds, scores in data.datasets.items():
        rows = {}
        for run in scores.runs:
            test = run.run.predictions
            val = validation_predictions(run.run.run_dir, test.classes)
            if val is None:
                out.notes.append(f"{ds}/{run.name}: no predictions_val.csv beside the test predictions, "
                                 "so no temperature scaling and no operating points")
                continue
            rows[run.name] = _calibrate(ds, run.name, val, test, data.settings, out)
        if not rows:
            continue
        numbers[ds] = rows
        table = _table(ds, rows, data.settings)
        out.tables[f"{file_name(ds)}_calibration"] = TableFiles(table)
        links = " · ".join(f"[{name}]({figure_path(ds, name, 'reliability_calibrated')})" for name in rows)
        out.markdown += [f"## Calibration: {ds}", "", tables.to_markdown(table),
                         f"Reliability on test before and after temperature scaling: {links}. Calibrated "
                         f"probabilities: `calibrated/{file_name(ds)}/<run>/predictions_{{val,test}}_calibrated.csv`.",
                         ""]
    out.data = numbers or None
    return out
