"""Operating points of clinical binary tasks against scikit-learn's curves and statsmodels' Wilson."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets.clinical import clinical_tasks
from accvit_med.reports import read_predictions, write_predictions, write_report
from accvit_med.reports.operating_points import at_threshold, choose_thresholds

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.fixture
def without_figures(monkeypatch):
    from accvit_med.reports import writer

    monkeypatch.setattr(writer, "save_figures", lambda drawers, folder, progress: sorted(drawers))


def test_adapters_declare_their_clinical_tasks():
    assert clinical_tasks("eyepacs") == {"referable DR": ("moderate", "severe", "proliferative")}
    assert clinical_tasks("ham10000") == {"melanoma": ("mel",), "malignant": ("mel", "bcc", "akiec")}
    assert clinical_tasks("busi") == {"malignant": ("malignant",)}
    assert clinical_tasks("csv") == {}


@pytest.mark.parametrize("seed", range(4))
def test_thresholds_match_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(120) < 0.3
    score = np.round(np.clip(rng.normal(0.35 + 0.3 * positive, 0.2), 0, 1), 2)  # rounded: ties
    fpr, tpr, thresholds = roc_curve(positive, score, drop_intermediate=False)
    chosen = dict(choose_thresholds(score, positive))
    assert chosen["Youden's J"] == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    for target in (0.90, 0.95):
        assert chosen[f"sensitivity >= {100 * target:g}%"] == pytest.approx(thresholds[np.argmax(tpr >= target)])


def test_test_set_proportions_have_wilson_intervals():
    rng = np.random.default_rng(7)
    positive = rng.random(80) < 0.4
    score = rng.random(80) * 0.5 + 0.4 * positive
    threshold = np.sort(score)[40]  # a threshold equal to a score: that image is called positive
    point = at_threshold(score, positive, threshold)
    called = score >= threshold
    tp, fp = (called & positive).sum(), (called & ~positive).sum()
    fn, tn = (~called & positive).sum(), (~called & ~positive).sum()
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        assert point[name] == pytest.approx(k / n)
        assert (point[f"{name}_ci"]["low"], point[f"{name}_ci"]["high"]) == pytest.approx(
            proportion_confint(k, n, method="wilson"), abs=1e-12)


def make_run(root: Path) -> Path:
    run = root / "ham10000" / "accvit_tiny" / "seed0"
    run.mkdir(parents=True)
    for split, n, seed in (("val", 150, 1), ("test", 120, 2)):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 7, n)
        logits = rng.normal(size=(n, 7))
        logits[np.arange(n), y] += 1.5
        probs = softmax(logits, axis=1)
        write_predictions(run / f"predictions_{split}.csv", [f"ISIC_{split}{i:04d}" for i in range(n)],
                          y, probs.argmax(axis=1), probs, HAM)
    (run / "config.json").write_text(json.dumps({"model": "accvit_tiny", "dataset": "ham10000", "classes": HAM}))
    return run


def test_report_applies_validation_thresholds_to_test(tmp_path, without_figures):
    run = make_run(tmp_path)
    result = write_report([run], tmp_path / "out", n_boot=200)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())["sections"]["operating_points"]["ham10000"]
    assert set(saved) == {"melanoma", "malignant"}
    val, test = (read_predictions(run / f"predictions_{s}.csv") for s in ("val", "test"))
    columns = [HAM.index(c) for c in ("mel", "bcc", "akiec")]
    val_score, test_score = val.probs[:, columns].sum(axis=1), test.probs[:, columns].sum(axis=1)
    val_pos, test_pos = np.isin(val.labels, ["mel", "bcc", "akiec"]), np.isin(test.labels, ["mel", "bcc", "akiec"])
    found = saved["malignant"]["accvit_tiny"]
    assert found["auroc"] == pytest.approx(roc_auc_score(test_pos, test_score))
    assert found["auroc_ci"]["low"] < found["auroc"] < found["auroc_ci"]["high"]
    fpr, tpr, thresholds = roc_curve(val_pos, val_score, drop_intermediate=False)
    youden = found["points"][0]
    assert youden["rule"] == "Youden's J" and youden["threshold"] == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    # Applied unchanged to test: the point lies on the test PR curve, at the first test threshold >= it.
    precision, recall, pr_thresholds = precision_recall_curve(test_pos, test_score)
    at = np.flatnonzero(pr_thresholds >= youden["threshold"])[0]
    assert (youden["test"]["ppv"], youden["test"]["sensitivity"]) == pytest.approx((precision[at], recall[at]))
    assert "figures/ham10000/accvit_tiny_operating_points_malignant.png" in result.files
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Operating points: ham10000, melanoma" in md and "95% Wilson score interval" in md


def test_cli_positive_classes(tmp_path, without_figures):
    run = make_run(tmp_path)
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--n-boot", "20", "--positive", "df,vasc"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "report.json").read_text())
    assert saved["settings"]["positive"] == ["df", "vasc"]
    assert "positive: df + vasc" in saved["sections"]["operating_points"]["ham10000"]
    bad = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "bad"), "--positive", "tumour"])
    assert bad.exit_code == 2 and "--positive tumour" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_figures_mark_the_points_and_label_both_reliability_curves():
    from accvit_med.reports import figures
    from accvit_med.reports.calibration import reliability_bins
    from accvit_med.reports.operating_points import OperatingPoint

    rng = np.random.default_rng(0)
    positive = rng.random(60) < 0.4
    score = rng.random(60) * 0.6 + 0.4 * positive
    points = [OperatingPoint(rule, t, 0.9, 0.8, at_threshold(score, positive, t))
              for rule, t in choose_thresholds(score, positive)]
    roc_ax, pr_ax = figures.operating_points_figure(score, positive, points, "m, task").axes
    for ax in (roc_ax, pr_ax):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sum(label.startswith(("Youden's J (t = ", "sensitivity >= ")) for label in labels) == 3
    youden = points[0].test
    marked = roc_ax.collections[0].get_offsets()[0]
    assert tuple(marked) == pytest.approx((1 - youden["specificity"], youden["sensitivity"]))
    probs = rng.dirichlet(np.ones(3), 50)
    y = rng.integers(0, 3, 50)
    tempered = probs ** 0.5 / (probs ** 0.5).sum(1, keepdims=True)
    raw, calibrated = reliability_bins(probs, y), reliability_bins(tempered, y)
    ax = figures.reliability_comparison_figure(raw, calibrated, 2.0, "m").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"raw (ECE {100 * raw['ece']:.1f}%)" in labels
    assert f"temperature T = 2.00 (ECE {100 * calibrated['ece']:.1f}%)" in labels
