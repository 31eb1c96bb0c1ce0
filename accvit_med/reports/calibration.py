"""Calibration of the top-class confidence: reliability bins and expected calibration error.

ECE follows Guo et al. (2017): equal-width bins over the confidence (the largest probability),
bin b holds confidences in (b/M, (b+1)/M], and ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|,
where acc is how often the top-probability class is the true one.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 15


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """Per-bin count, mean confidence and accuracy (NaN for empty bins) and the ECE."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    # ceil(c*M)-1 puts c in (b/M, (b+1)/M]; a confidence of exactly 0 cannot occur for a max.
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, correct_sum / count, np.nan)
    gaps = np.abs(correct_sum - conf_sum)  # = count * |acc - conf| per bin
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "confidence": mean_conf,
        "accuracy": accuracy,
        "ece": float(gaps.sum() / len(confidence)),
    }

