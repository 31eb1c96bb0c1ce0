"""Temperature scaling (Guo et al., 2017) and the scores that judge probabilities.

Predictions files hold probabilities, not logits; log p equals the logits up to a per-row
constant, which softmax ignores, so softmax(log p / T) is exactly softmax(logits / T). One scalar
T > 0 is fitted on the validation predictions by minimising the negative log-likelihood; the
argmax, and so the accuracy, does not change.
"""

from __future__ import annotations

import numpy as np

# log(0) is -inf: a probability written as 0 is read as the smallest positive double instead.
_TINY = np.finfo(np.float64).tiny
# The fitted log T lies in [-LOG_T_BOUND, LOG_T_BOUND]: T from 0.0067 to 148.
LOG_T_BOUND = 5.0


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, None))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), rows summing to 1."""
    z = log_probabilities(probs) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean -log p(true class) (natural log), as scikit-learn's ``log_loss``."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(-log_probabilities(probs[np.arange(len(y_true)), y_true]).mean())


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multi-class Brier score: mean over images of sum_k (p_k - y_k)^2 (0 best, 2 worst)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y_true)), y_true] = 1.0
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The T minimising the NLL of softmax(log p / T) on these (validation) predictions."""
    from scipy.optimize import minimize_scalar

    logp = log_probabilities(probs)
    y_true = np.asarray(y_true)
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        top = z.max(axis=1)
        return float((top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[rows, y_true]).mean())

    # The NLL is convex in 1/T, so unimodal in log T: a bounded Brent search finds its minimum.
    found = minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND), method="bounded",
                            options={"xatol": 1e-7})
    return float(np.exp(found.x))


def calibration_distributions(probs: np.ndarray, y_true: np.ndarray, n_bins: int, weights) -> dict[str, np.ndarray]:
    """ECE, Brier score and NLL of every resample: ``weights`` is an iterable of (b, n) count
    matrices (e.g. ``bootstrap.row_weights``); returns arrays of all resamples' scores."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    rows = np.arange(len(y_true))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    member = np.zeros((len(y_true), n_bins))
    member[rows, bins] = 1.0
    onehot = np.zeros_like(probs)
    onehot[rows, y_true] = 1.0
    brier = ((probs - onehot) ** 2).sum(axis=1)
    nll = -log_probabilities(probs[rows, y_true])
    out: dict[str, list] = {"ece": [], "brier": [], "nll": []}
    for w in weights:
        total = w.sum(axis=1)
        gap = np.abs(w @ (member * correct[:, None]) - w @ (member * confidence[:, None])).sum(axis=1)
        out["ece"].append(gap / total)
        out["brier"].append(w @ brier / total)
        out["nll"].append(w @ nll / total)
    return {name: np.concatenate(parts) for name, parts in out.items()}
