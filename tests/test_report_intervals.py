"""Intervals that hold on small test sets: Wilson for proportions, bootstrap over test rows."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from accvit_med.reports import classification_metrics, confusion, write_predictions, write_report
from accvit_med.reports.bootstrap import bootstrap_scores, row_weights
from accvit_med.reports.intervals import wilson_interval

BUSI = ["benign", "malignant", "normal"]


@pytest.fixture
def without_figures(monkeypatch):
    from accvit_med.reports import writer

    monkeypatch.setattr(writer, "save_figures", lambda drawers, folder, progress: [])


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 7), (7, 7), (3, 7), (1, 23), (22, 23), (50, 100), (999, 1000)])
def test_wilson_matches_statsmodels_and_never_has_zero_width(k, n):
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(proportion_confint(k, n, alpha=0.05, method="wilson"), abs=1e-12)
    assert high - low > 0
    assert wilson_interval(0, 0) == (None, None)


def all_right_or_all_wrong(n_per_class: int = 14):
    """Every benign and malignant image right, every normal image called benign: the stratified
    bootstrap cannot vary accuracy or macro-F1 here."""
    y = np.repeat([0, 1, 2], n_per_class)
    pred = np.where(y == 2, 0, y)
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    return y, pred, probs


def test_row_bootstrap_matches_scipy_where_the_stratified_one_collapses():
    y, pred, probs = all_right_or_all_wrong()
    ours = classification_metrics(y, pred, probs, n_boot=4000, seed=0, warn=False)
    stratified = classification_metrics(y, pred, probs, n_boot=200, seed=0, warn=False, bootstrap="stratified")
    assert stratified["ci"]["accuracy"]["low"] == stratified["ci"]["accuracy"]["high"]  # the old zero width
    reference = stats.bootstrap((y, pred), lambda a, b, axis=-1: (a == b).mean(axis=axis), paired=True,
                                vectorized=True, n_resamples=4000, method="percentile", random_state=1)
    low, high = reference.confidence_interval
    assert high - low > 0.1
    assert (ours["ci"]["accuracy"]["low"], ours["ci"]["accuracy"]["high"]) == pytest.approx((low, high), abs=0.015)
    assert ours["ci"]["macro_f1"]["high"] - ours["ci"]["macro_f1"]["low"] > 0.05
    assert ours["bootstrap"] == "rows"


def test_row_resamples_score_as_sklearn_on_the_drawn_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, 60))
    probs = rng.dirichlet(np.ones(3), 60)
    weights = np.concatenate(list(row_weights(60, 250, seed=5)))
    assert weights.shape == (250, 60) and (weights.sum(axis=1) == 60).all()
    # Not stratified: class counts move between resamples.
    assert len({int(weights[b, y == 0].sum()) for b in range(250)}) > 5
    scores = bootstrap_scores(y, [(pred, probs)], 3, n_boot=250, seed=5)[0]
    cms = confusion.confusion_matrix(y, pred, 3, weights)
    for b in (0, 77, 249):
        rows = np.repeat(np.arange(60), weights[b])
        assert cms[b].tolist() == skm.confusion_matrix(y[rows], pred[rows], labels=range(3)).tolist()
        assert scores["accuracy"][b] == pytest.approx(skm.accuracy_score(y[rows], pred[rows]))
        assert scores["macro_f1"][b] == pytest.approx(
            skm.f1_score(y[rows], pred[rows], average="macro", labels=range(3), zero_division=0))
        assert scores["macro_auc"][b] == pytest.approx(skm.roc_auc_score(y[rows], probs[rows], multi_class="ovr"))


def _interval(text: str) -> tuple[float, float, float]:
    value, low, high = map(float, re.match(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", text).groups())
    return value, low, high


def test_report_shows_wilson_per_class_and_names_its_methods(tmp_path, without_figures):
    y, pred, probs = all_right_or_all_wrong()
    run = tmp_path / "busi" / "accvit_tiny" / "r"
    run.mkdir(parents=True)
    write_predictions(run / "predictions_test.csv", [f"i{i:03d}" for i in range(len(y))], y, pred, probs, BUSI)
    write_report([f"busi/accvit_tiny={run}"], tmp_path / "out", n_boot=300)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Wilson score interval" in md and "percentile bootstrap over test images, 300 resamples" in md
    rows = {r[0]: r for r in csv.reader((tmp_path / "out" / "busi_sensitivity_specificity_auc.csv").open())}
    cm = skm.confusion_matrix(y, pred, labels=range(3))
    for c, name in enumerate(BUSI):
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        tn = len(y) - tp - fn - fp
        for column, (k, n) in zip((1, 2, 4, 5), ((tp, tp + fn), (tn, tn + fp), (tp, tp + fp), (tn, tn + fn))):
            if n == 0:
                continue
            value, low, high = _interval(rows[name][column])
            assert value == pytest.approx(k / n, abs=5e-4)
            assert (low, high) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=5e-4)
    summary = {r[0]: r for r in csv.reader((tmp_path / "out" / "summary.csv").open())}
    assert summary["dataset / model"][2] == "Acc [95% Wilson]"
    acc, low, high = _interval(summary["busi / accvit_tiny"][2])
    assert (low / 100, high / 100) == pytest.approx(proportion_confint(28, 42, method="wilson"), abs=5e-5)
    f1, f1_low, f1_high = _interval(summary["busi / accvit_tiny"][3])
    assert f1_high > f1_low  # the stratified bootstrap gave zero width here
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["settings"]["bootstrap"] == "rows"
    stratified = write_report([f"busi/accvit_tiny={run}"], tmp_path / "s", n_boot=50, bootstrap="stratified")
    assert "stratified bootstrap (resampled within each true class)" in (tmp_path / "s" / "report.md").read_text()
    assert stratified.datasets["busi"][0].metrics["bootstrap"] == "stratified"


def test_cli_bootstrap_option(tmp_path, without_figures):
    from typer.testing import CliRunner

    from accvit_med.cli import app

    y, pred, probs = all_right_or_all_wrong(5)
    write_predictions(tmp_path / "p.csv", [f"i{i}" for i in range(len(y))], y, pred, probs, BUSI)
    bad = CliRunner().invoke(
        app, ["report", str(tmp_path / "p.csv"), "-o", str(tmp_path / "b"), "--bootstrap", "cases"])
    assert bad.exit_code == 2 and "--bootstrap is 'cases'" in bad.stderr and not (tmp_path / "b").exists()
    good = CliRunner().invoke(app, ["report", str(tmp_path / "p.csv"), "-o", str(tmp_path / "s"), "--n-boot", "30",
                                    "--bootstrap", "stratified"])
    assert good.exit_code == 0, good.output
    assert json.loads((tmp_path / "s" / "report.json").read_text())["settings"]["bootstrap"] == "stratified"
