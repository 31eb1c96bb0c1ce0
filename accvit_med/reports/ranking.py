"""One-vs-rest ROC-AUC with per-sample weights, vectorised over bootstrap resamples.

A bootstrap resample is the original rows with integer weights (how often each row was drawn),
so the AUC of a resample is the weighted Mann-Whitney statistic on the original scores: sort
once, then every resample is a few cumulative sums instead of a call to scikit-learn.
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
    n = scores.shape[0]
    single = weights is None
    w = np.ones((1, n)) if single else np.asarray(weights, dtype=np.float64)

    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    is_pos = positive[order]
    w = w[:, order]
    # Each row's tie group: [start, end) in sorted order, so ties get half credit.
    new_group = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    starts = np.flatnonzero(new_group)
    group = np.cumsum(new_group) - 1
    group_start = starts[group]
    group_end = np.r_[starts[1:], n][group]

    negative_weight = w * ~is_pos
    cumulative = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(negative_weight, axis=1)], axis=1)
    pos_cols = np.flatnonzero(is_pos)
    below = cumulative[:, group_start[pos_cols]]
    tied = cumulative[:, group_end[pos_cols]] - below
    pos_w = w[:, pos_cols]
    wins = (pos_w * (below + 0.5 * tied)).sum(axis=1)
    pairs = pos_w.sum(axis=1) * cumulative[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where(pairs > 0, wins / pairs, np.nan)
    return auc[0] if single else auc


def one_vs_rest_auc(probs: np.ndarray, y_true: np.ndarray,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """Per-class one-vs-rest AUC: (k,) or (B, k) with weights; NaN for undefined classes."""
    k = probs.shape[1]
    return np.stack([weighted_auc(probs[:, c], y_true == c, weights) for c in range(k)], axis=-1)
