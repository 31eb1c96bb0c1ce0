"""One-vs-rest ROC-AUC with per-sample weights, vectorised over bootstrap resamples.

A bootstrap resample is the original rows with integer weights (how often each row was drawn),
so the AUC of a resample is the weighted Mann-Whitney statistic on the original scores: sort the
negatives once, then every resample is one cumulative sum and a few gathers instead of a call
to scikit-learn.
"""

from __future__ import annotations

import numpy as np


def weighted_auc(scores: np.ndarray, positive: np.ndarray,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC of ``scores`` for the boolean ``positive`` labels; ties count one half.

    ``weights`` is (B, n) for B weightings of the same rows (None: each row once). Returns (B,)
    (or a 0-d array without weights); NaN where one side (positives or negatives) is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    single = weights is None
    w = np.ones((1, scores.shape[0])) if single else np.asarray(weights, dtype=np.float64)

    pos_rows = np.flatnonzero(positive)
    neg_rows = np.flatnonzero(~positive)
    neg_rows = neg_rows[np.argsort(scores[neg_rows], kind="stable")]
    neg_scores = scores[neg_rows]
    # For each positive: how many negatives (in sorted order) score below it, and below-or-equal.
    below_end = np.searchsorted(neg_scores, scores[pos_rows], side="left")
    tie_end = np.searchsorted(neg_scores, scores[pos_rows], side="right")

    # Cumulative negative weight, with a leading 0 so that index i means "the first i negatives".
    cumulative = np.zeros((w.shape[0], len(neg_rows) + 1))
    np.cumsum(w[:, neg_rows], axis=1, out=cumulative[:, 1:])
    credit = cumulative[:, below_end]
    if (tie_end != below_end).any():
        credit += 0.5 * (cumulative[:, tie_end] - credit)
    pos_w = w[:, pos_rows]
    wins = np.einsum("bi,bi->b", pos_w, credit)
    pairs = pos_w.sum(axis=1) * cumulative[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(pairs > 0, wins / pairs, np.nan)
    return auc[0] if single else auc


def one_vs_rest_auc(probs: np.ndarray, y_true: np.ndarray,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class one-vs-rest AUC: (k,) or (B, k) with weights; NaN for undefined classes."""
    k = probs.shape[1]
    return np.stack([weighted_auc(probs[:, c], y_true == c, weights) for c in range(k)], axis=-1)
