"""Scores computed from confusion matrices, batched so that bootstrap resamples are cheap.

Every function takes count matrices of shape ``(..., k, k)`` (rows = true class, columns =
predicted class) and returns arrays with the leading ``...`` dimensions, so a single test set
and 1,000 bootstrap resamples go through the same code.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """Count matrix (k, k) from class indices; with ``weights`` (B, n), one matrix per row (B, k, k)."""
    cells = np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64)
    if weights is None:
        return np.bincount(cells, minlength=k * k).reshape(k, k)
    # One bincount over all resamples at once: offset each resample into its own k*k block.
    batch = weights.shape[0]
    offsets = (np.arange(batch, dtype=np.int64) * (k * k))[:, None] + cells[None, :]
    counts = np.bincount(offsets.ravel(), weights=weights.ravel(), minlength=batch * k * k)
    return counts.reshape(batch, k, k)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # Undefined ratios (0/0) are 0, as scikit-learn's zero_division="warn" reports them.
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(numerator.shape, denominator.shape))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall (= sensitivity), specificity, F1 and support: arrays (..., k)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    total = cm.sum(axis=(-2, -1))[..., None]
    fp = predicted - tp
    fn = support - tp
    tn = total - tp - fp - fn
    return {
        "precision": _safe_divide(tp, predicted),
        "recall": _safe_divide(tp, support),
        "specificity": _safe_divide(tn, tn + fp),
        # 2tp / (2tp + fp + fn) equals the harmonic mean where that is defined, and is 0 where
        # scikit-learn (>= 1.3) reports 0 for an undefined F1.
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn),
        "support": support,
    }


def accuracy(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    return _safe_divide(np.trace(cm, axis1=-2, axis2=-1), cm.sum(axis=(-2, -1)))


def macro_f1(cm: np.ndarray) -> np.ndarray:
    return per_class_scores(cm)["f1"].mean(axis=-1)


def balanced_accuracy(cm: np.ndarray) -> np.ndarray:
    """Mean recall over the classes present in the true labels (as scikit-learn computes it)."""
    scores = per_class_scores(cm)
    present = scores["support"] > 0
    return _safe_divide((scores["recall"] * present).sum(axis=-1), present.sum(axis=-1))


def quadratic_weighted_kappa(cm: np.ndarray) -> np.ndarray:
    """Cohen's kappa with quadratic weights; NaN where undefined (e.g. one class only)."""
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[-1]
    grades = np.arange(k, dtype=np.float64)
    weights = (grades[:, None] - grades[None, :]) ** 2
    total = cm.sum(axis=(-2, -1))
    expected = cm.sum(axis=-1)[..., :, None] * cm.sum(axis=-2)[..., None, :]
    expected = expected / np.where(total > 0, total, 1)[..., None, None]
    observed_disagreement = (weights * cm).sum(axis=(-2, -1))
    expected_disagreement = (weights * expected).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected_disagreement > 0,
                        1.0 - observed_disagreement / expected_disagreement, np.nan)
