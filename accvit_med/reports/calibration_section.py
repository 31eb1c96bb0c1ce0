"""The report's calibration section: temperature scaling fitted on validation, applied to test.

For every run with validation predictions: T (fitted on validation by NLL), and ECE, Brier score
and NLL on the test set before and after; a reliability diagram with both; and the calibrated
probabilities as ``calibrated/<dataset>/<run>/predictions_{val,test}_calibrated.csv`` in the
report folder (the run's own files are never rewritten).
"""

from __future__ import annotations

import math
from functools import partial

from accvit_med.reports import figures, tables
from accvit_med.reports.calibration import reliability_bins
from accvit_med.reports.predictions import Predictions, predictions_csv
from accvit_med.reports.sections import Rendered, ReportData, TableFiles, figure_path, file_name
from accvit_med.reports.temperature import (LOG_T_BOUND, apply_temperature, brier_score, fit_temperature,
                                            negative_log_likelihood)
from accvit_med.reports.validation import validation_predictions

SCORES = ("ece", "brier", "nll")


def calibration_scores(probs, y_true, ece_bins: int) -> dict:
    return {"ece": reliability_bins(probs, y_true, ece_bins)["ece"], "brier": brier_score(probs, y_true),
            "nll": negative_log_likelihood(probs, y_true)}


def _calibrated_csv(p: Predictions, probs) -> str:
    return predictions_csv(p.paths, p.labels, p.preds, probs, p.classes)


def calibration_section(data: ReportData) -> Rendered:
    out, numbers = Rendered(), {}
    if data.settings.split == "val":
        out.notes.append("calibration skipped: the report reads validation predictions, on which the "
                         "temperature would be fitted")
        return out
    bins = data.settings.ece_bins
    for ds, scores in data.datasets.items():
        table = tables.Table(
            caption=f"Calibration on {ds}: temperature T fitted on validation (NLL), scores on test "
                    f"(ECE %, {bins} equal-width bins; multi-class Brier; NLL in nats), raw -> calibrated",
            row_header="model", decimals=4,
            groups=[("", ["T", "n val"]), ("ECE %", ["raw", "calibrated"]), ("Brier", ["raw", "calibrated"]),
                    ("NLL", ["raw", "calibrated"])])
        rows = {}
        for run in scores.runs:
            test = run.run.predictions
            val = validation_predictions(run.run.run_dir, test.classes)
            if val is None:
                out.notes.append(f"{ds}/{run.name}: no predictions_val.csv beside the test predictions, "
                                 "so no temperature scaling")
                continue
            t = fit_temperature(val.probs, val.y_true)
            if abs(abs(math.log(t)) - LOG_T_BOUND) < 1e-3:
                out.notes.append(f"{ds}/{run.name}: the fitted temperature {t:.3g} is at the search bound "
                                 "(validation predictions separable or degenerate)")
            calibrated = apply_temperature(test.probs, t)
            raw_s, cal_s = (calibration_scores(p, test.y_true, bins) for p in (test.probs, calibrated))
            rows[run.name] = {"temperature": t, "n_val": len(val), "n_test": len(test),
                              "test_raw": raw_s, "test_calibrated": cal_s,
                              "val_nll_raw": negative_log_likelihood(val.probs, val.y_true),
                              "val_nll_calibrated": negative_log_likelihood(apply_temperature(val.probs, t), val.y_true)}
            table.rows.append((run.name, [t, len(val), 100 * raw_s["ece"], 100 * cal_s["ece"], raw_s["brier"],
                                          cal_s["brier"], raw_s["nll"], cal_s["nll"]]))
            folder = f"calibrated/{file_name(ds)}/{file_name(run.name)}"
            out.files[f"{folder}/predictions_val_calibrated.csv"] = _calibrated_csv(val, apply_temperature(val.probs, t))
            out.files[f"{folder}/predictions_test_calibrated.csv"] = _calibrated_csv(test, calibrated)
            out.figures[figure_path(ds, run.name, "reliability_calibrated")] = partial(
                figures.reliability_comparison_figure, reliability_bins(test.probs, test.y_true, bins),
                reliability_bins(calibrated, test.y_true, bins), t, f"{run.name} on {ds}")
        if not rows:
            continue
        numbers[ds] = rows
        stem = f"{file_name(ds)}_calibration"
        out.tables[stem] = TableFiles(table)
        links = " · ".join(f"[{name}]({figure_path(ds, name, 'reliability_calibrated')})" for name in rows)
        out.markdown += [f"## Calibration: {ds}", "", tables.to_markdown(table),
                         f"Reliability before and after temperature scaling: {links}. Calibrated "
                         f"probabilities: `calibrated/{file_name(ds)}/<run>/predictions_{{val,test}}_calibrated.csv`.", ""]
    out.data = numbers or None
    return out
