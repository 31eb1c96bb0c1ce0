"""Temperature scaling and the probability scores against scikit-learn and a grid search."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax, softmax
from sklearn.metrics import brier_score_loss, log_loss

from accvit_med.reports import read_predictions, write_predictions, write_report
from accvit_med.reports.temperature import apply_temperature, brier_score, fit_temperature, negative_log_likelihood

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def overconfident(seed: int, n: int, k: int = 3, sharpness: float = 3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    return y, softmax(sharpness * logits, axis=1)


def test_scores_match_sklearn():
    y, probs = overconfident(0, 150, k=4)
    assert negative_log_likelihood(probs, y) == pytest.approx(log_loss(y, probs, labels=range(4)), rel=1e-9)
    one_vs_rest = sum(brier_score_loss(y == c, probs[:, c]) for c in range(4))
    assert brier_score(probs, y) == pytest.approx(one_vs_rest, rel=1e-9)


def test_fitted_temperature_is_the_grid_minimum_and_keeps_the_argmax():
    y, probs = overconfident(1, 300)
    logits = np.log(probs)

    def nll(t):  # one row per temperature
        t = np.asarray(t)[:, None, None]
        return -np.take_along_axis(log_softmax(logits[None] / t, axis=2), y[None, :, None], axis=2).mean(axis=(1, 2))

    coarse = np.arange(0.05, 10, 0.02)
    best = coarse[np.argmin(nll(coarse))]
    fine = np.arange(best - 0.03, best + 0.03, 1e-5)
    grid_t = fine[np.argmin(nll(fine))]
    fitted = fit_temperature(probs, y)
    assert fitted == pytest.approx(grid_t, abs=1e-3)
    assert fitted > 1.5  # overconfident predictions are softened
    calibrated = apply_temperature(probs, fitted)
    assert (calibrated.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert log_loss(y, calibrated) < log_loss(y, probs)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, rtol=1e-9)


def make_run(root: Path, seed: int) -> Path:
    run = root / "ham10000" / "accvit_tiny" / "seed0"
    run.mkdir(parents=True)
    for split, n in (("val", 140), ("test", 105)):
        y, probs = overconfident(seed + n, n, k=7)
        write_predictions(run / f"predictions_{split}.csv", [f"ISIC_{split}{i:04d}" for i in range(n)],
                          y, probs.argmax(axis=1), probs, HAM)
    (run / "config.json").write_text(json.dumps({"model": "accvit_tiny", "dataset": "ham10000", "classes": HAM}))
    return run


def test_report_calibrates_from_validation_and_leaves_the_run_alone(tmp_path, monkeypatch):
    from accvit_med.reports import writer

    monkeypatch.setattr(writer, "save_figures", lambda drawers, folder, progress: sorted(drawers))
    run = make_run(tmp_path, 3)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    result = write_report([run], tmp_path / "out", n_boot=20)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()} == before
    sections = json.loads((tmp_path / "out" / "report.json").read_text())["sections"]
    numbers = sections["calibration"]["ham10000"]["accvit_tiny"]
    val, test = (read_predictions(run / f"predictions_{s}.csv") for s in ("val", "test"))
    order = np.argsort(val.paths)
    t = numbers["temperature"]
    assert t == pytest.approx(fit_temperature(val.probs[order], val.y_true[order]), rel=1e-9)
    folder = tmp_path / "out" / "calibrated" / "ham10000" / "accvit_tiny"
    calibrated = read_predictions(folder / "predictions_test_calibrated.csv")
    rows = np.argsort(test.paths)
    np.testing.assert_allclose(calibrated.probs, softmax(np.log(test.probs[rows]) / t, axis=1), atol=1e-7)
    assert list(calibrated.preds) == list(test.preds[rows])
    assert numbers["test_raw"]["nll"] == pytest.approx(log_loss(test.labels, test.probs, labels=HAM), rel=1e-9)
    assert numbers["test_calibrated"]["nll"] == pytest.approx(
        log_loss(calibrated.labels, calibrated.probs, labels=HAM), abs=1e-6)
    assert (folder / "predictions_val_calibrated.csv").is_file()
    assert "figures/ham10000/accvit_tiny_reliability_calibrated.png" in result.files
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Calibration: ham10000" in md and f"| accvit_tiny | {t:.4f} | 140 |" in md
    # A bare predictions CSV has no validation predictions: a note, no calibration.
    (tmp_path / "bare.csv").write_bytes((run / "predictions_test.csv").read_bytes())
    bare = write_report([f"ham10000/x={tmp_path / 'bare.csv'}"], tmp_path / "bare", n_boot=0)
    assert any("no predictions_val.csv" in note for note in bare.notes) and "calibration" not in bare.sections


def test_calibration_resamples_score_as_sklearn_on_the_drawn_rows():
    from accvit_med.reports.bootstrap import row_weights
    from accvit_med.reports.calibration import reliability_bins
    from accvit_med.reports.temperature import calibration_distributions

    y, probs = overconfident(5, 90, k=3)
    weights = np.concatenate(list(row_weights(90, 30, seed=2)))
    found = calibration_distributions(probs, y, 15, [weights])
    for b in (0, 29):
        rows = np.repeat(np.arange(90), weights[b])
        assert found["nll"][b] == pytest.approx(log_loss(y[rows], probs[rows], labels=range(3)), rel=1e-9)
        assert found["brier"][b] == pytest.approx(
            sum(brier_score_loss(y[rows] == c, probs[rows, c]) for c in range(3)), rel=1e-9)
        assert found["ece"][b] == pytest.approx(reliability_bins(probs[rows], y[rows], 15)["ece"], rel=1e-9)
