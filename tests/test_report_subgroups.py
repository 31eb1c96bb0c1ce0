"""Subgroup tables: per-level numbers against fairlearn's MetricFrame, intervals against statsmodels
and a hand-written bootstrap, age bins against pandas.cut."""

from __future__ import annotations

from functools import partial

import fairlearn.metrics as fairlearn  # test extra: a missing reference is an error, not a skip
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score
from statsmodels.stats.proportion import proportion_confint

from accvit_med.reports.predictions import Predictions
from accvit_med.reports.subgroups import bootstrap_macro_f1, compute_subgroups, render_subgroups

CLASSES = ("akiec", "bcc", "bkl", "mel", "nv")
POSITIVE = ("mel", "bcc", "akiec")


def _predictions(n: int = 160, seed: int = 3) -> Predictions:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(CLASSES), n)
    # Right about 70% of the time, more often for women, so the levels differ.
    sex = rng.choice(["female", "male", "unknown"], n, p=[0.45, 0.5, 0.05])
    right = rng.random(n) < np.where(sex == "female", 0.85, 0.6)
    pred = np.where(right, truth, rng.integers(0, len(CLASSES), n))
    probs = np.full((n, len(CLASSES)), 0.1 / (len(CLASSES) - 1))
    probs[np.arange(n), pred] = 0.9
    ages = rng.choice(np.array(["", "5", "25", "30", "45", "49", "50", "65", "69", "70", "85"]), n)
    site = rng.choice(["back", "face", "trunk", "scalp"], n, p=[0.4, 0.3, 0.25, 0.05])
    names = np.array(CLASSES)
    return Predictions(np.array([f"img{i:04d}.jpg" for i in range(n)]), names[truth], names[pred], probs,
                       CLASSES, metadata={"age": ages, "sex": sex, "localization": site})


def _age_bins(ages: np.ndarray) -> pd.Series:
    numbers = pd.to_numeric(pd.Series(ages), errors="coerce")
    bins = pd.cut(numbers, [-np.inf, 30, 50, 70, np.inf], right=False, labels=["<30", "30-49", "50-69", ">=70"])
    return bins.astype(object).fillna("unknown")


def test_per_level_numbers_match_fairlearn_metricframe():
    p = _predictions()
    analysis = compute_subgroups(p, positive=POSITIVE, n_boot=200, seed=1)
    truth_pos = np.isin(p.labels, POSITIVE).astype(int)
    pred_pos = np.isin(p.preds, POSITIVE).astype(int)
    sensitive = {"age": _age_bins(p.metadata["age"]), "sex": p.metadata["sex"],
                 "localization": p.metadata["localization"]}
    for column in analysis.columns:
        frame = fairlearn.MetricFrame(
            metrics={"accuracy": accuracy_score, "macro_f1": partial(f1_score, average="macro", zero_division=0)},
            y_true=p.labels, y_pred=p.preds, sensitive_features=pd.Series(sensitive[column.column], name=column.column))
        binary = fairlearn.MetricFrame(
            metrics={"sensitivity": partial(recall_score, zero_division=0),
                     "specificity": partial(recall_score, pos_label=0, zero_division=0),
                     "count": fairlearn.count, "prevalence": lambda y, _: float(np.mean(y))},
            y_true=truth_pos, y_pred=pred_pos,
            sensitive_features=pd.Series(sensitive[column.column], name=column.column))
        assert {lv.level for lv in column.levels} == set(frame.by_group.index)
        for lv in column.levels:
            assert lv.n == binary.by_group.loc[lv.level, "count"]
            assert lv.accuracy.value == pytest.approx(frame.by_group.loc[lv.level, "accuracy"], abs=1e-12)
            assert lv.macro_f1.value == pytest.approx(frame.by_group.loc[lv.level, "macro_f1"], abs=1e-12)
            for metric, estimate in (("sensitivity", lv.sensitivity), ("specificity", lv.specificity)):
                defined = binary.by_group.loc[lv.level, "prevalence"] not in ((0.0, 1.0)[metric == "specificity"],)
                expected = binary.by_group.loc[lv.level, metric]
                # Undefined (no positive, or no negative image in the level) is None, not sklearn's 0.
                assert estimate.value == (pytest.approx(expected, abs=1e-12) if defined else None), metric
            assert lv.prevalence == pytest.approx(binary.by_group.loc[lv.level, "prevalence"], abs=1e-12)
            assert lv.share == pytest.approx(lv.n / len(p))
        # The largest gap: between levels of at least 10 images, as fairlearn's between-groups difference.
        big = binary.by_group.index[binary.by_group["count"] >= 10]
        gaps = {g.metric: g.gap for g in column.gaps}
        assert gaps["accuracy"] == pytest.approx(frame.by_group.loc[big, "accuracy"].max()
                                                 - frame.by_group.loc[big, "accuracy"].min(), abs=1e-12)
        assert gaps["sensitivity"] == pytest.approx(binary.by_group.loc[big, "sensitivity"].max()
                                                    - binary.by_group.loc[big, "sensitivity"].min(), abs=1e-12)


def test_intervals_are_wilson_and_small_levels_have_none():
    p = _predictions()
    analysis = compute_subgroups(p, positive=POSITIVE, n_boot=200, seed=1)
    small = 0
    for column in analysis.columns:
        for lv in column.levels:
            if lv.n < 10:
                small += 1
                assert lv.accuracy.low is None and lv.macro_f1.low is None and lv.sensitivity.low is None
                assert lv.level not in {g.best for g in column.gaps} | {g.worst for g in column.gaps}
                continue
            correct = round(lv.accuracy.value * lv.n)
            low, high = proportion_confint(correct, lv.n, alpha=0.05, method="wilson")
            assert (lv.accuracy.low, lv.accuracy.high) == pytest.approx((low, high), abs=1e-9)
            assert lv.macro_f1.low <= lv.macro_f1.value <= lv.macro_f1.high and lv.macro_f1.low < lv.macro_f1.high
    assert small >= 1  # the "unknown" sex and the scalp site are under 10 images
    assert [lv.level for lv in analysis.columns[0].levels] == ["<30", "30-49", "50-69", ">=70", "unknown"]
    text = "\n".join(render_subgroups(analysis))
    assert "| age (binned) | >=70 |" in text and "Largest gap" in text and "Wilson" in text


def test_macro_f1_bootstrap_is_the_percentile_interval_of_row_resamples():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 40), rng.integers(0, 4, 40)
    got = bootstrap_macro_f1(y_true, y_pred, 4, 300, np.random.default_rng(11))
    rows = np.random.default_rng(11).integers(0, 40, size=(300, 40))
    scores = [f1_score(y_true[r], y_pred[r], average="macro", zero_division=0) for r in rows]
    assert got == pytest.approx(tuple(np.percentile(scores, [2.5, 97.5])), abs=1e-12)


def test_meta_columns_round_trip_and_follow_row_order(tmp_path):
    import csv

    from accvit_med.reports.predictions import read_predictions, write_predictions

    p = _predictions(n=12)
    path = tmp_path / "predictions_test.csv"
    write_predictions(path, p.paths, p.labels, p.preds, p.probs, p.classes, metadata=p.metadata)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["meta_sex"] for row in rows] == list(p.metadata["sex"])  # read back by csv, not by us
    again = read_predictions(path)
    assert set(again.metadata) == {"age", "sex", "localization"}
    order = np.argsort(again.paths)[::-1]
    taken = again.take(order)
    assert list(taken.metadata["age"]) == [rows[i]["meta_age"] for i in order]
