"""Operating points of a clinical binary task: thresholds chosen on validation, applied to test.

The positive score is the summed probability of the positive classes. On validation: Youden's J
(the threshold maximising sensitivity + specificity - 1) and, for each target sensitivity, the
most specific threshold that still reaches it (the largest t whose sensitivity is >= the target).
An image is called positive when its score is >= the threshold. On test, at those thresholds
unchanged: sensitivity, specificity, PPV and NPV with Wilson intervals; AUROC with a percentile
bootstrap interval over test images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from accvit_med.reports.bootstrap import percentile_interval, row_weights
from accvit_med.reports.intervals import wilson
from accvit_med.reports.ranking import weighted_auc

TARGET_SENSITIVITIES = (0.90, 0.95)


def positive_score(probs: np.ndarray, classes: Sequence[str], positive: Sequence[str]) -> np.ndarray:
    """The summed probability of the ``positive`` classes, per row."""
    columns = [list(classes).index(c) for c in positive]
    return np.asarray(probs, dtype=np.float64)[:, columns].sum(axis=1)


def _rates(score: np.ndarray, is_positive: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at each threshold (positive = score >= threshold)."""
    pos, neg = np.sort(score[is_positive]), np.sort(score[~is_positive])
    sensitivity = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / max(len(pos), 1)
    specificity = np.searchsorted(neg, thresholds, side="left") / max(len(neg), 1)
    return sensitivity, specificity


def choose_thresholds(score: np.ndarray, is_positive: np.ndarray,
                      targets: Sequence[float] = TARGET_SENSITIVITIES) -> list[tuple[str, float]]:
    """(rule, threshold) chosen on these (validation) scores: Youden's J, then one per target.
    Needs positives and negatives. Ties in J go to the larger threshold."""
    score, is_positive = np.asarray(score, dtype=np.float64), np.asarray(is_positive, dtype=bool)
    candidates = np.unique(score)[::-1]  # descending: argmax keeps the largest threshold on ties
    sensitivity, specificity = _rates(score, is_positive, candidates)
    chosen = [("Youden's J", float(candidates[np.argmax(sensitivity + specificity - 1)]))]
    for target in targets:
        reaching = np.flatnonzero(sensitivity >= target - 1e-12)
        chosen.append((f"sensitivity >= {100 * target:g}%", float(candidates[reaching[0]])))
    return chosen


def at_threshold(score: np.ndarray, is_positive: np.ndarray, threshold: float) -> dict:
    """Counts, sensitivity, specificity, PPV and NPV (each with its Wilson interval) at ``threshold``."""
    called = np.asarray(score) >= threshold
    is_positive = np.asarray(is_positive, dtype=bool)
    tp, fn = int((called & is_positive).sum()), int((~called & is_positive).sum())
    fp, tn = int((called & ~is_positive).sum()), int((~called & ~is_positive).sum())
    out: dict = {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
    for name, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        out[name] = k / n if n else None
        out[f"{name}_ci"] = wilson(k, n)
    return out


@dataclass(frozen=True)
class OperatingPoint:
    rule: str
    threshold: float  # chosen on validation
    val_sensitivity: float
    val_specificity: float
    test: dict  # at_threshold() on the test set


@dataclass(frozen=True)
class BinaryTask:
    """One run's clinical binary task: AUROC on test and the operating points."""

    task: str
    positive: tuple[str, ...]
    n_val: int
    n_test: int
    test_positives: int
    auroc: float | None
    auroc_ci: dict  # percentile bootstrap over test images
    points: tuple[OperatingPoint, ...]

    def to_json(self) -> dict:
        return asdict(self)


def binary_task(task: str, positive: Sequence[str], classes: Sequence[str], val, test,
                n_boot: int, seed: int) -> BinaryTask | None:
    """The task on one run's validation and test predictions (Predictions objects); None when the
    validation set lacks positives or negatives (no threshold can be chosen)."""
    val_score, test_score = (positive_score(p.probs, classes, positive) for p in (val, test))
    val_pos, test_pos = (np.isin(p.labels, list(positive)) for p in (val, test))
    if val_pos.all() or not val_pos.any():
        return None
    points = []
    for rule, threshold in choose_thresholds(val_score, val_pos):
        sens, spec = _rates(val_score, val_pos, np.array([threshold]))
        points.append(OperatingPoint(rule, threshold, float(sens[0]), float(spec[0]),
                                     at_threshold(test_score, test_pos, threshold)))
    auroc = weighted_auc(test_score, test_pos)
    auroc = None if np.isnan(auroc) else float(auroc)
    low = high = None
    if auroc is not None and n_boot > 0:
        samples = np.concatenate([weighted_auc(test_score, test_pos, w) for w in row_weights(len(test), n_boot, seed)])
        low, high = percentile_interval(samples)
    return BinaryTask(task, tuple(positive), len(val), len(test), int(test_pos.sum()), auroc,
                      {"low": low, "high": high}, tuple(points))
