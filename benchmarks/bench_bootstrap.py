"""Stratified bootstrap speed: the vectorised resampler against a scikit-learn loop, side by side.

Usage: .venv/bin/python benchmarks/bench_bootstrap.py [--rows 10000] [--classes 7] [--resamples 1000]

Both compute accuracy, macro-F1 and macro one-vs-rest AUC per resample. The scikit-learn loop is
timed on a few resamples and scaled to the full count (running it 1,000 times takes minutes).
The first resamples of both are compared, so the speed-up is of the same numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn import metrics as skm

from accvit_med.reports.bootstrap import bootstrap_scores, stratified_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--sklearn-resamples", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n, k = args.rows, args.classes
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)

    start = time.perf_counter()
    ours = bootstrap_scores(y, [(pred, probs)], k, n_boot=args.resamples, seed=0, method="stratified")[0]
    vectorised = time.perf_counter() - start

    # The same generator call as bootstrap_scores, so resample b is the same in both.
    weights = next(stratified_weights(y, args.resamples, seed=0))[: args.sklearn_resamples]
    start = time.perf_counter()
    for b, row_counts in enumerate(weights):
        rows = np.repeat(np.arange(n), row_counts)
        accuracy = skm.accuracy_score(y[rows], pred[rows])
        macro_f1 = skm.f1_score(y[rows], pred[rows], average="macro", labels=range(k), zero_division=0)
        macro_auc = skm.roc_auc_score(y[rows], probs[rows], multi_class="ovr", labels=range(k))
        assert np.allclose([accuracy, macro_f1, macro_auc],
                           [ours["accuracy"][b], ours["macro_f1"][b], ours["macro_auc"][b]])
    per_resample = (time.perf_counter() - start) / len(weights)
    loop = per_resample * args.resamples

    print(f"{args.resamples} stratified resamples of {n} rows, {k} classes (accuracy, macro-F1, macro-AUC)")
    print(f"  vectorised (accvit_med.reports.bootstrap): {vectorised:8.2f} s")
    print(f"  scikit-learn loop (scaled from {len(weights)}):     {loop:8.2f} s")
    print(f"  speed-up: {loop / vectorised:.1f}x (first {len(weights)} resamples agree to 1e-8)")


if __name__ == "__main__":
    main()
