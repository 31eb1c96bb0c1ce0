"""classification_metrics and its parts against scikit-learn and hand-computed values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from accvit_med import UserError
from accvit_med.reports import MetricWarning, classification_metrics, confusion
from accvit_med.reports.bootstrap import bootstrap_scores, stratified_weights
from accvit_med.reports.calibration import reliability_bins
from accvit_med.reports.ranking import one_vs_rest_auc, weighted_auc


def random_predictions(seed: int, n: int = 300, k: int = 5, skill: float = 2.0):
    """Labels, probabilities (rows sum to 1) and argmax predictions with some signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill * rng.random(n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs.argmax(axis=1), probs


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_classification_report(seed):
    y, pred, probs = random_predictions(seed)
    classes = ["a", "b", "c", "d", "e"]
    ours = classification_metrics(y, pred, probs, classes=classes, warn=False)
    report = skm.classification_report(y, pred, labels=range(5), target_names=classes,
                                       output_dict=True, zero_division=0)
    for name in classes:
        for key, sk_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours["per_class"][name][key] == pytest.approx(report[name][sk_key], abs=1e-12)
        assert ours["per_class"][name]["support"] == report[name]["support"]
    for avg in ("macro", "weighted"):
        assert ours[f"{avg}_precision"] == pytest.approx(report[f"{avg} avg"]["precision"], abs=1e-12)
        assert ours[f"{avg}_recall"] == pytest.approx(report[f"{avg} avg"]["recall"], abs=1e-12)
        assert ours[f"{avg}_f1"] == pytest.approx(report[f"{avg} avg"]["f1-score"], abs=1e-12)
    assert ours["accuracy"] == pytest.approx(report["accuracy"], abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert ours["macro_auc"] == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-12)
    for c, name in enumerate(classes):
        assert ours["per_class"][name]["auc"] == pytest.approx(
            skm.roc_auc_score(y == c, probs[:, c]), abs=1e-12)
    tn_fp = skm.multilabel_confusion_matrix(y, pred, labels=range(5))
    for c, name in enumerate(classes):
        (tn, fp), _ = tn_fp[c]
        assert ours["per_class"][name]["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert ours["per_class"][name]["sensitivity"] == ours["per_class"][name]["recall"]
    assert ours["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(5)).tolist()
    assert ours["quadratic_weighted_kappa"] is None  # not ordinal
    json.dumps(ours)  # plain Python types only


@pytest.mark.parametrize("seed", range(3))
def test_quadratic_kappa_matches_sklearn(seed):
    y, pred, probs = random_predictions(seed, k=5)
    ours = classification_metrics(y, pred, probs, ordinal=True, warn=False)
    assert ours["quadratic_weighted_kappa"] == pytest.approx(
        skm.cohen_kappa_score(y, pred, labels=range(5), weights="quadratic"), abs=1e-12)


def test_string_labels_are_class_names():
    y, pred, probs = random_predictions(7, k=3)
    names = np.array(["benign", "malignant", "normal"])
    by_name = classification_metrics(names[y], names[pred], probs, classes=list(names), warn=False)
    by_index = classification_metrics(y, pred, probs, classes=list(names), warn=False)
    assert by_name == by_index


def test_hand_made_confusion_matrix():
    # Rows = truth, columns = prediction:
    #        a  b  c
    #   a  [ 8, 2, 0]   support 10
    #   b  [ 1, 3, 1]   support 5
    #   c  [ 0, 0, 5]   support 5
    cm = np.array([[8, 2, 0], [1, 3, 1], [0, 0, 5]])
    y = np.repeat(np.arange(3), cm.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(3), row) for row in cm])
    m = classification_metrics(y, pred, classes=["a", "b", "c"], warn=False)
    a, b, c = (m["per_class"][x] for x in "abc")
    assert (a["precision"], a["recall"]) == (pytest.approx(8 / 9), pytest.approx(8 / 10))
    assert (b["precision"], b["recall"]) == (pytest.approx(3 / 5), pytest.approx(3 / 5))
    assert (c["precision"], c["recall"]) == (pytest.approx(5 / 6), pytest.approx(1.0))
    assert a["f1"] == pytest.approx(2 * 8 / (2 * 8 + 1 + 2))
    assert a["specificity"] == pytest.approx(9 / 10)  # 10 non-a rows, 1 called a
    assert b["specificity"] == pytest.approx(13 / 15)
    assert m["accuracy"] == pytest.approx(16 / 20)
    assert m["balanced_accuracy"] == pytest.approx((0.8 + 0.6 + 1.0) / 3)
    assert m["macro_recall"] == pytest.approx((0.8 + 0.6 + 1.0) / 3)
    assert m["weighted_recall"] == pytest.approx(m["accuracy"])
    # Quadratic kappa by hand: weights (i-j)^2, expected = outer(rows, cols) / n.
    rows, cols = cm.sum(1), cm.sum(0)
    w = (np.arange(3)[:, None] - np.arange(3)[None, :]) ** 2
    expected = np.outer(rows, cols) / 20
    kappa = 1 - (w * cm).sum() / (w * expected).sum()
    assert classification_metrics(y, pred, classes=list("abc"), ordinal=True,
                                  warn=False)["quadratic_weighted_kappa"] == pytest.approx(kappa)
    # Observed disagreement 4 (cells at distance 1: 2+1+1); expected
    # (10*(5*1+6*4) + 5*(9*1+6*1) + 5*(9*4+5*1)) / 20 = 28.5.
    assert kappa == pytest.approx(1 - 4 / 28.5)


def test_class_never_predicted_warns_and_scores_zero():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    with pytest.warns(MetricWarning, match="'c' is never predicted"):
        m = classification_metrics(y, pred, classes=["a", "b", "c"])
    assert m["per_class"]["c"]["precision"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = skm.precision_score(y, pred, average=None, labels=[0, 1, 2])
    assert sk[2] == 0.0
    assert any("never predicted" in note for note in m["notes"])


@pytest.mark.filterwarnings("ignore::UserWarning")  # the other notes, and scikit-learn's own
def test_class_absent_from_test_set_has_undefined_auc():
    y, pred, probs = random_predictions(3, k=4)
    y = np.where(y == 3, 0, y)  # class 'd' absent from the truth
    with pytest.warns(MetricWarning, match="'d' is absent"):
        m = classification_metrics(y, pred, probs, classes=list("abcd"))
    assert m["per_class"]["d"]["auc"] is None
    assert m["per_class"]["d"]["support"] == 0
    defined = [skm.roc_auc_score(y == c, probs[:, c]) for c in range(3)]
    assert m["macro_auc"] == pytest.approx(np.mean(defined))
    report = skm.classification_report(y, pred, labels=range(4), output_dict=True, zero_division=0)
    assert m["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="same length"):
        classification_metrics([0, 1], [0])
    with pytest.raises(UserError, match="'z', which is not one of the classes"):
        classification_metrics(["a", "z"], ["a", "a"], classes=["a", "b"])
    with pytest.raises(UserError, match="shape"):
        classification_metrics([0, 1], [0, 1], np.ones((2, 3)) / 3, classes=["a", "b"])


def test_weighted_auc_equals_sklearn_on_expanded_rows():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # rounding makes ties
    positive = rng.random(200) < 0.3
    weights = rng.integers(0, 4, size=(6, 200))
    ours = weighted_auc(scores, positive, weights)
    for b in range(6):
        rows = np.repeat(np.arange(200), weights[b])
        assert ours[b] == pytest.approx(skm.roc_auc_score(positive[rows], scores[rows]), abs=1e-12)
    assert np.isnan(weighted_auc(scores, np.zeros(200, bool)))


def test_bootstrap_resamples_are_stratified_and_scores_match_sklearn():
    y, pred, probs = random_predictions(11, n=120, k=3)
    weights = np.concatenate(list(stratified_weights(y, 250, seed=5)))
    assert weights.shape == (250, 120)
    for c in range(3):  # every resample keeps each class's count
        assert (weights[:, y == c].sum(axis=1) == (y == c).sum()).all()
    cms = confusion.confusion_matrix(y, pred, 3, weights)
    scores = bootstrap_scores(y, [(pred, probs)], 3, n_boot=250, seed=5, ordinal=True, method="stratified")[0]
    for b in (0, 101, 249):
        rows = np.repeat(np.arange(120), weights[b])
        assert cms[b].tolist() == skm.confusion_matrix(y[rows], pred[rows], labels=range(3)).tolist()
        assert scores["accuracy"][b] == pytest.approx(skm.accuracy_score(y[rows], pred[rows]))
        assert scores["macro_f1"][b] == pytest.approx(
            skm.f1_score(y[rows], pred[rows], average="macro", labels=range(3), zero_division=0))
        assert scores["macro_auc"][b] == pytest.approx(
            skm.roc_auc_score(y[rows], probs[rows], multi_class="ovr"))
        assert scores["quadratic_weighted_kappa"][b] == pytest.approx(
            skm.cohen_kappa_score(y[rows], pred[rows], weights="quadratic"))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    y, pred, probs = random_predictions(2, n=400)
    first = classification_metrics(y, pred, probs, n_boot=200, seed=1, warn=False)
    again = classification_metrics(y, pred, probs, n_boot=200, seed=1, warn=False)
    other = classification_metrics(y, pred, probs, n_boot=200, seed=2, warn=False)
    assert first["ci"] == again["ci"]
    assert first["ci"] != other["ci"]
    for name, key in (("accuracy", "accuracy"), ("macro_f1", "macro_f1"), ("macro_auc", "macro_auc")):
        assert first["ci"][name]["low"] < first[key] < first["ci"][name]["high"]


def test_bootstrap_interval_is_the_2_5_and_97_5_percentiles_of_the_resamples():
    y, pred, probs = random_predictions(4, n=300)
    result = classification_metrics(y, pred, probs, n_boot=300, seed=3, warn=False)
    resamples = bootstrap_scores(y, [(pred, probs)], 5, n_boot=300, seed=3)[0]
    assert result["ci_level"] == 0.95
    for name in ("accuracy", "macro_f1", "macro_auc"):
        low, high = np.percentile(resamples[name], [2.5, 97.5])
        assert (result["ci"][name]["low"], result["ci"][name]["high"]) == pytest.approx((low, high), abs=1e-12)


def test_paired_difference_p_value_and_interval_on_a_made_up_distribution():
    from accvit_med.reports.bootstrap import paired_difference

    # 200 resampled differences a - b: 16 below zero, 10 at zero, 174 above.
    diff = np.concatenate([np.full(16, -0.05), np.zeros(10), np.linspace(0.01, 0.3, 174)])
    rng = np.random.default_rng(0)
    b = rng.random(200)
    a = b + rng.permutation(diff)
    result = paired_difference(a, b, estimate=0.1)
    # Two-sided bootstrap p-value: twice the smaller tail, P(diff <= 0) = 26/200 here.
    assert result["p_value"] == pytest.approx(2 * 26 / 200, abs=1e-12)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(np.percentile(a - b, [2.5, 97.5])), abs=1e-12)
    assert result["significant"] is False and result["difference"] == 0.1
    # Every resample above zero: p = 0 and the interval excludes 0; the mirror image has the same p.
    clear = paired_difference(b + 0.2, b, estimate=0.2)
    assert clear["p_value"] == 0.0 and clear["significant"] is True
    assert paired_difference(b, a, estimate=-0.1)["p_value"] == pytest.approx(2 * 26 / 200, abs=1e-12)


def test_ece_by_hand_and_against_a_loop():
    # Two bins used (of 10): confidences 0.55/0.55 (1 of 2 right) and 0.95/0.95 (2 of 2 right).
    probs = np.array([[0.55, 0.45], [0.45, 0.55], [0.95, 0.05], [0.05, 0.95]])
    y = np.array([0, 0, 0, 1])
    bins = reliability_bins(probs, y, n_bins=10)
    assert bins["ece"] == pytest.approx(0.5 * abs(0.5 - 0.55) + 0.5 * abs(1.0 - 0.95))
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]

    y, _, p = random_predictions(4, n=500)
    conf, correct = p.max(1), p.argmax(1) == y
    loop = 0.0
    for b in range(15):
        inside = (conf > b / 15) & (conf <= (b + 1) / 15)
        if inside.any():
            loop += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert reliability_bins(p, y, 15)["ece"] == pytest.approx(loop, abs=1e-12)


def _ece_by_hand(confidence: list[float], correct: list[bool], n_bins: int) -> tuple[float, list[int]]:
    """ECE with the stated convention: bin b holds b/M < c <= (b+1)/M, edges the floats b / M."""
    total, counts = 0.0, []
    for b in range(n_bins):
        inside = [i for i, c in enumerate(confidence) if b / n_bins < c <= (b + 1) / n_bins]
        counts.append(len(inside))
        if inside:
            accuracy = sum(correct[i] for i in inside) / len(inside)
            mean_conf = sum(confidence[i] for i in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(accuracy - mean_conf)
    return total, counts


@pytest.mark.parametrize("n_bins", [10, 15, 25])
def test_ece_puts_a_confidence_on_a_bin_edge_in_the_bin_below(n_bins):
    # Confidences exactly on edges k/M (three classes: the top probability is at least 1/3),
    # right and wrong alternating, plus 1.0 (the last edge).
    rows, labels = [], []
    for k in range(-(-n_bins // 3), n_bins + 1):
        c = k / n_bins
        rest = (1.0 - c) / 2
        if rest >= c:  # k/M = 1/3 exactly: not a unique top class
            continue
        rows.append([rest, c, rest])
        labels.append(1 if k % 2 else 0)
    probs, y = np.array(rows), np.array(labels)
    ece, counts = _ece_by_hand(probs.max(1).tolist(), (probs.argmax(1) == y).tolist(), n_bins)
    bins = reliability_bins(probs, y, n_bins)
    assert bins["count"].tolist() == counts
    assert bins["ece"] == pytest.approx(ece, abs=1e-12)
    assert bins["edges"].tolist() == [b / n_bins for b in range(n_bins + 1)]
    # In words, for M = 10: 0.7 is in (0.6, 0.7], bin 6; 1.0 in the last bin.
    if n_bins == 10:
        one = reliability_bins(np.array([[0.3, 0.7], [0.0, 1.0]]), np.array([1, 1]), 10)["count"].tolist()
        assert one == [0, 0, 0, 0, 0, 0, 1, 0, 0, 1]


def test_one_vs_rest_auc_matches_sklearn_per_class():
    y, _, probs = random_predictions(9, k=4)
    ours = one_vs_rest_auc(probs, y)
    assert ours == pytest.approx([skm.roc_auc_score(y == c, probs[:, c]) for c in range(4)])
