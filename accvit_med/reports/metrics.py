"""``classification_metrics``: every number of metrics.json, from labels and probabilities.

Precision, recall, F1, support and their macro/weighted averages match scikit-learn's
``classification_report`` (undefined ratios are 0, with a warning, as scikit-learn does).
Beside them: sensitivity and specificity per class, balanced accuracy, one-vs-rest ROC-AUC per
class and macro, quadratic weighted kappa (ordinal classes), expected calibration error, Wilson
score intervals for accuracy and each class's sensitivity, specificity, PPV and NPV, and, on
request, bootstrap confidence intervals (over test images, or stratified by class).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from accvit_med.errors import UserError
from accvit_med.reports import confusion
from accvit_med.reports.bootstrap import CI_LEVEL, bootstrap_scores, percentile_interval
from accvit_med.reports.calibration import DEFAULT_BINS, reliability_bins
from accvit_med.reports.intervals import wilson
from accvit_med.reports.ranking import one_vs_rest_auc

# EyePACS's grades in their (ordinal) order; a run with exactly these classes gets kappa.
EYEPACS_GRADES = ("none", "mild", "moderate", "severe", "proliferative")


class MetricWarning(UserWarning):
    """A metric is undefined for this test set (like scikit-learn's UndefinedMetricWarning)."""


def is_ordinal_classes(classes: Sequence[str]) -> bool:
    return tuple(str(c).lower() for c in classes) == EYEPACS_GRADES


def encode_labels(values, classes: Sequence[str], what: str) -> np.ndarray:
    """Class names or integer indices -> int64 indices into ``classes`` (UserError if unknown)."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        if values.size and (values.min() < 0 or values.max() >= len(classes)):
            raise UserError(f"{what} holds class index {int(values.max())} but there are only "
                            f"{len(classes)} classes; pass the full class list as classes=")
        return values.astype(np.int64)
    lookup = {str(name): i for i, name in enumerate(classes)}
    names = values.astype(str)
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise UserError(f"{what} holds '{unknown[0]}', which is not one of the classes "
                        f"({', '.join(map(str, classes))}); pass the full class list as classes=")
    return np.fromiter((lookup[name] for name in names), dtype=np.int64, count=len(names))


def _infer_classes(y_true: np.ndarray, y_pred: np.ndarray, y_prob: np.ndarray | None) -> list[str]:
    if y_true.dtype.kind in "iu" and y_pred.dtype.kind in "iu":
        k = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
        if y_prob is not None:
            k = max(k, y_prob.shape[1])
        return [str(i) for i in range(k)]
    if y_prob is not None:
        raise UserError("class names without classes=: the probability columns' class order is "
                        "unknown; pass classes=[...] in column order")
    return sorted(set(y_true.astype(str)) | set(y_pred.astype(str)))


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def classification_metrics(
    y_true,
    y_pred,
    y_prob=None,
    classes: Sequence[str] | None = None,
    ordinal: bool = False,
    *,
    n_boot: int = 0,
    seed: int = 0,
    ece_bins: int = DEFAULT_BINS,
    warn: bool = True,
    bootstrap: str = "rows",
) -> dict:
    """The metrics.json dict (plain Python floats, ints, strings and lists; JSON-ready).

    ``y_true``/``y_pred`` are class names or integer indices into ``classes``; ``y_prob`` is an
    optional (n, k) array of probabilities in ``classes`` order. ``n_boot`` > 0 adds 95%
    bootstrap intervals (seeded by ``seed``; ``bootstrap`` "rows" resamples test images,
    "stratified" resamples within each class) under ``"ci"``. Wilson intervals of accuracy are
    under ``"wilson"``, those of each class's proportions under ``per_class[c]["wilson"]``. Undefined values (AUC of a
    class absent from the test set, kappa of a single-class test set) are ``None``, and every
    undefined metric is explained in ``"notes"`` (and warned about, unless ``warn=False``).
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    probs = None if y_prob is None else np.asarray(y_prob, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise UserError(f"y_true and y_pred must be two non-empty lists of the same length "
                        f"(got {y_true.shape} and {y_pred.shape})")
    classes = [str(c) for c in classes] if classes is not None else _infer_classes(y_true, y_pred, probs)
    k = len(classes)
    if probs is not None and probs.shape != (len(y_true), k):
        raise UserError(f"y_prob has shape {probs.shape}; expected ({len(y_true)}, {k}), "
                        "one probability column per class in classes order")
    true_idx = encode_labels(y_true, classes, "y_true")
    pred_idx = encode_labels(y_pred, classes, "y_pred")
    ordinal = bool(ordinal)

    cm = confusion.confusion_matrix(true_idx, pred_idx, k)
    scores = confusion.per_class_scores(cm)
    support = scores["support"]
    n = int(support.sum())
    notes: list[str] = []
    for c, name in enumerate(classes):
        if cm[:, c].sum() == 0:
            notes.append(f"class '{name}' is never predicted: its precision is undefined and set to 0")
        if support[c] == 0:
            notes.append(f"class '{name}' is absent from the test set: its recall and F1 are "
                         "undefined and set to 0, and its AUC is undefined")

    tp = np.diagonal(cm).astype(np.int64)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    result: dict = {
        "classes": classes,
        "n": n,
        "accuracy": float(confusion.accuracy(cm)),
        "wilson": {"accuracy": wilson(int(tp.sum()), n)},
        "balanced_accuracy": float(confusion.balanced_accuracy(cm)),
    }
    for name in ("precision", "recall", "f1"):
        result[f"macro_{name}"] = float(scores[name].mean())
        result[f"weighted_{name}"] = float((scores[name] * support).sum() / n)

    auc = one_vs_rest_auc(probs, true_idx) if probs is not None else np.full(k, np.nan)
    if probs is not None:
        for c, name in enumerate(classes):
            if np.isnan(auc[c]) and support[c] == n:
                notes.append(f"class '{name}' is the only class in the test set: its AUC is undefined")
    result["per_class"] = {
        name: {
            "precision": float(scores["precision"][c]),
            "recall": float(scores["recall"][c]),
            "f1": float(scores["f1"][c]),
            "support": int(support[c]),
            "sensitivity": float(scores["recall"][c]),
            "specificity": float(scores["specificity"][c]),
            "auc": _nan_to_none(auc[c]),
            # PPV is the precision; NPV = tn / (tn + fn), 0 when never predicted negative.
            "ppv": float(scores["precision"][c]),
            "npv": float(tn[c] / (tn[c] + fn[c])) if tn[c] + fn[c] else 0.0,
            "wilson": {
                "sensitivity": wilson(tp[c], tp[c] + fn[c]),
                "specificity": wilson(tn[c], tn[c] + fp[c]),
                "ppv": wilson(tp[c], tp[c] + fp[c]),
                "npv": wilson(tn[c], tn[c] + fn[c]),
            },
        }
        for c, name in enumerate(classes)
    }
    defined_auc = auc[~np.isnan(auc)]
    result["macro_auc"] = float(defined_auc.mean()) if defined_auc.size else None
    if probs is not None and 0 < defined_auc.size < k:
        notes.append(f"macro AUC averages the {defined_auc.size} of {k} classes where AUC is defined")

    result["ordinal"] = ordinal
    kappa = _nan_to_none(confusion.quadratic_weighted_kappa(cm)) if ordinal else None
    if ordinal and kappa is None:
        notes.append("quadratic weighted kappa is undefined (labels and predictions agree by chance only)")
    result["quadratic_weighted_kappa"] = kappa

    if probs is not None:
        calibration = reliability_bins(probs, true_idx, ece_bins)
        result["ece"] = calibration["ece"]
    else:
        result["ece"] = None
    result["ece_bins"] = ece_bins
    result["confusion_matrix"] = cm.astype(int).tolist()

    if n_boot > 0:
        distribution = bootstrap_scores(true_idx, [(pred_idx, probs)], k, n_boot, seed, ordinal, bootstrap)[0]
        result["ci"] = confidence_intervals(distribution)
        result["bootstrap"] = bootstrap
        result["ci_level"] = CI_LEVEL
        result["n_boot"] = int(n_boot)
        result["seed"] = int(seed)

    result["notes"] = notes
    if warn:
        for note in notes:
            warnings.warn(note, MetricWarning, stacklevel=2)
    return result


def confidence_intervals(distribution: dict[str, np.ndarray]) -> dict:
    """{metric: {"low": ..., "high": ...}} from bootstrap distributions."""
    out = {}
    for name, samples in sorted(distribution.items()):
        low, high = percentile_interval(samples)
        out[name] = {"low": low, "high": high}
    return out
