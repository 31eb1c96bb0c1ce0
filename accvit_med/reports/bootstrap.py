"""Bootstrap over test images: confidence intervals for one run, paired differences between runs.

By default a resample draws n test rows with replacement (``"rows"``, the percentile bootstrap
over images). ``"stratified"`` draws within each true class instead, keeping the class counts:
then a class whose images are all right (or all wrong) adds no variance, and on a small test set
the interval can collapse to zero width, so it is an option, named in the report. Resamples come
from a seeded NumPy Generator and are represented as per-row counts. Scores come from
batched confusion matrices and weighted AUCs, so 1,000 resamples of a 10k-row test set take
about a second. Runs scored on the same rows share the same resamples: that is what makes the
paired differences paired.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from accvit_med.reports import confusion
from accvit_med.reports.ranking import one_vs_rest_auc

DEFAULT_RESAMPLES = 1000
CI_LEVEL = 0.95
BOOTSTRAP_METHODS = ("rows", "stratified")
BOOTSTRAP_NAMES = {"rows": "percentile bootstrap over test images",
                   "stratified": "stratified bootstrap (resampled within each true class)"}
# Resamples per batch: bounds memory at about chunk * n * 8 bytes per array.
_CHUNK = 100


def stratified_weights(y_true: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) count matrices, b <= 100, n_boot rows in all; row sums per class fixed."""
    y_true = np.asarray(y_true)
    n = len(y_true)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y_true == c) for c in np.unique(y_true)]
    for start in range(0, n_boot, _CHUNK):
        batch = min(_CHUNK, n_boot - start)
        drawn = np.concatenate(
            [rows[rng.integers(0, len(rows), size=(batch, len(rows)))] for rows in members], axis=1
        )
        offsets = (np.arange(batch, dtype=np.int64) * n)[:, None] + drawn
        yield np.bincount(offsets.ravel(), minlength=batch * n).reshape(batch, n)


def row_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield (b, n) count matrices, b <= 100, n_boot rows in all: n rows drawn with replacement."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _CHUNK):
        batch = min(_CHUNK, n_boot - start)
        drawn = rng.integers(0, n, size=(batch, n))
        offsets = (np.arange(batch, dtype=np.int64) * n)[:, None] + drawn
        yield np.bincount(offsets.ravel(), minlength=batch * n).reshape(batch, n)


def resample_weights(y_true: np.ndarray, n_boot: int, seed: int, method: str = "rows") -> Iterator[np.ndarray]:
    """The resamples of ``method`` ("rows" or "stratified") as (b, n) count matrices."""
    if method == "rows":
        return row_weights(len(y_true), n_boot, seed)
    if method == "stratified":
        return stratified_weights(y_true, n_boot, seed)
    raise ValueError(f"bootstrap method {method!r}; use one of {', '.join(BOOTSTRAP_METHODS)}")


def bootstrap_scores(
    y_true: np.ndarray,
    runs: Sequence[tuple[np.ndarray, np.ndarray | None]],
    k: int,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    ordinal: bool = False,
    method: str = "rows",
) -> list[dict[str, np.ndarray]]:
    """Bootstrap distributions (n_boot,) of accuracy, macro-F1, macro-AUC (with probabilities)
    and quadratic weighted kappa (ordinal) for each run (y_pred, probs) on the same rows, all
    runs scored on the same resamples of ``method``."""
    out: list[dict[str, list]] = [{} for _ in runs]
    for weights in resample_weights(y_true, n_boot, seed, method):
        for scores, (y_pred, probs) in zip(out, runs):
            cm = confusion.confusion_matrix(y_true, y_pred, k, weights)
            batch = {"accuracy": confusion.accuracy(cm), "macro_f1": confusion.macro_f1(cm)}
            if ordinal:
                batch["quadratic_weighted_kappa"] = confusion.quadratic_weighted_kappa(cm)
            if probs is not None:
                auc = one_vs_rest_auc(probs, y_true, weights)
                defined = ~np.isnan(auc)
                # A resample's macro-AUC averages the classes defined in it; a row resample
                # can miss a rare class, whose AUC then sits out of that resample's average.
                batch["macro_auc"] = np.where(defined.any(axis=1),
                                              np.nansum(auc, axis=1) / np.maximum(defined.sum(axis=1), 1),
                                              np.nan)
            for name, values in batch.items():
                scores.setdefault(name, []).append(values)
    return [{name: np.concatenate(parts) for name, parts in scores.items()} for scores in out]


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval; (None, None) where the statistic is never defined."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None, None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def paired_difference(a: np.ndarray, b: np.ndarray, estimate: float | None,
                      level: float = CI_LEVEL) -> dict:
    """Difference a - b over shared resamples: estimate, interval, two-sided bootstrap p-value."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    diff = diff[~np.isnan(diff)]
    low, high = percentile_interval(diff, level)
    if diff.size == 0:
        p_value = None
    else:
        p_value = float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))
    return {
        "difference": estimate,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        # The interval excludes 0: the gap is larger than resampling noise at this level.
        "significant": None if low is None else bool(low > 0 or high < 0),
    }
