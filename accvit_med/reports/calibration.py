"""Calibration of the top-class confidence: reliability bins and expected calibration error.

ECE follows Guo et al. (2017): equal-width bins over the confidence (the largest probability),
bin b holds confidences in (b/M, (b+1)/M], and ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|,
where acc is how often the top-probability class is the true one.

Bin edges: the edge b/M is the floating-point number ``b / M``, and a confidence equal to it lies
in the bin below (b-1), as the interval says: 0.7 with M = 10 is in (0.6, 0.7], 1.0 in the last
bin. (``ceil(c * M) - 1`` would not do: with M = 25, 0.28 * 25 rounds to 7.000000000000001 and
would put a confidence of 0.28 = 7/25 in (0.28, 0.32].)
"""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """Per-bin count, mean confidence and accuracy (NaN for empty bins) and the ECE."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.arange(n_bins + 1) / n_bins
    # searchsorted(left) - 1 is the b with edges[b] < c <= edges[b + 1]; a maximum is never 0.
    bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, correct_sum / count, np.nan)
    gaps = np.abs(correct_sum - conf_sum)  # = count * |acc - conf| per bin
    return {
        "edges": edges,
        "count": count,
        "confidence": mean_conf,
        "accuracy": accuracy,
        "ece": float(gaps.sum() / len(confidence)),
    }

