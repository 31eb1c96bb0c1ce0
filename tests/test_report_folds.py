"""`accvit-med report` over runs on the folds of one cross-validation: one row per model, mean ± sd
over folds checked against scikit-learn on each fold's predictions, the pooled out-of-fold metrics
against scikit-learn on the concatenated predictions, per-fold CSV rows, and paired comparisons on
the pooled predictions."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from accvit_med.datasets import synthetic
from accvit_med.datasets.create_split import create_folds
from accvit_med.fileio import sha256_file
from accvit_med.reports import write_predictions, write_report

CLASSES = ["a", "b", "c"]
K = 3


def make_fold_run(root: Path, model: str, fold_csv: Path, skill: float, seed: int = 0) -> Path:
    """A finished run on one fold: config.json naming the fold file, and its test predictions."""
    frame = pd.read_csv(fold_csv, dtype=str, keep_default_na=False)
    test = frame[frame["split"] == "test"]
    y = pd.Categorical(test["label"], categories=CLASSES).codes
    logits = np.random.default_rng(zlib.crc32(f"{model}{fold_csv.name}{seed}".encode())).normal(size=(len(y), 3))
    logits[np.arange(len(y)), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run = root / "runs" / "csv" / model / f"{fold_csv.stem}-seed{seed}"
    run.mkdir(parents=True)
    write_predictions(run / "predictions_test.csv", test["path"].tolist(), y, probs.argmax(axis=1), probs, CLASSES)
    split = {"path": str(fold_csv), "absolute_path": str(fold_csv.resolve()), "sha256": sha256_file(fold_csv)}
    recipe = {"seed": seed, "lr": 5e-5, "epochs": 3, "split": str(fold_csv)}
    (run / "config.json").write_text(json.dumps({"model": model, "dataset": "csv", "classes": CLASSES,
                                                 "ordinal": False, "split": split, "recipe": recipe}))
    return run


@pytest.fixture(scope="module")
def crossval(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    data = synthetic.make_csv_dataset(root / "data", classes=tuple(CLASSES), per_class=12, size=(8, 8),
                                      images_per_group=2)
    folds = create_folds("csv", K, data, root / "splits" / "csv-3fold", progress=False)
    runs = {(m, k): make_fold_run(root, m, path, skill)
            for m, skill in (("accvit_tiny", 2.0), ("resnet50", 0.5)) for k, path in enumerate(folds.csv_paths, 1)}
    result = write_report(list(runs.values()), root / "report", n_boot=200)
    return runs, result, root / "report"


def _predictions(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "predictions_test.csv", dtype=str, keep_default_na=False)


def _sklearn(frame: pd.DataFrame) -> dict:
    probs = frame[[f"prob_{c}" for c in CLASSES]].astype(float).to_numpy()
    return {"accuracy": skm.accuracy_score(frame["label"], frame["pred"]),
            "macro_f1": skm.f1_score(frame["label"], frame["pred"], average="macro"),
            "macro_auc": skm.roc_auc_score(frame["label"], probs, multi_class="ovr", labels=CLASSES)}


def read_rows(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as handle:
        return {row[0]: row[1:] for row in csv.reader(handle)}


def test_one_row_per_model_scored_on_the_pooled_out_of_fold_predictions(crossval):
    runs, result, out = crossval
    scored = {run.name: run for run in result.datasets["csv"]}
    assert set(scored) == {"accvit_tiny (3-fold CV)", "resnet50 (3-fold CV)"}
    for model in ("accvit_tiny", "resnet50"):
        pooled = pd.concat([_predictions(runs[(model, k)]) for k in range(1, K + 1)])
        assert len(pooled) == 36 and pooled["path"].is_unique  # every image once
        expected = _sklearn(pooled)
        metrics = scored[f"{model} (3-fold CV)"].metrics
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, abs=1e-9)
        assert metrics["ci"]["macro_f1"]["low"] <= metrics["macro_f1"] <= metrics["ci"]["macro_f1"]["high"]
    summary = read_rows(out / "summary.csv")
    assert summary["csv / accvit_tiny (3-fold CV)"][0] == "36"
    assert "[" in summary["csv / accvit_tiny (3-fold CV)"][1]  # pooled accuracy with its interval


def test_mean_and_sd_over_folds_and_per_fold_csv_rows(crossval):
    runs, _, out = crossval
    table1 = read_rows(out / "table1.csv")
    cv = read_rows(out / "cross_validation.csv")
    header = cv["dataset / model"]
    f1_mean = header.index("Macro-F1 mean ± sd")
    for model in ("accvit_tiny", "resnet50"):
        per_fold = [_sklearn(_predictions(runs[(model, k)])) for k in range(1, K + 1)]
        f1 = 100 * np.array([s["macro_f1"] for s in per_fold])
        expected = f"{f1.mean():.2f} ± {f1.std(ddof=1):.2f}"
        assert cv[f"csv / {model} (3-fold CV)"][f1_mean] == expected
        assert table1[f"{model} (3-fold CV)"][table1["Model"].index("csv F1")] == expected
        for k in range(1, K + 1):  # the CSVs carry one row per fold
            name = f"{model} (3-fold CV) fold{k}"
            assert float(cv[f"csv / {name}"][f1_mean]) == pytest.approx(f1[k - 1], abs=0.006)
            assert f"csv / {name}" in read_rows(out / "summary.csv")
            assert name in table1
    markdown = (out / "cross_validation.md").read_text()
    assert "fold1" not in markdown and "accvit_tiny (3-fold CV)" in markdown
    report = json.loads((out / "report.json").read_text())
    group = report["sections"]["cross_validation"]["csv"][0]
    assert group["k"] == 3 and group["folds"] == [1, 2, 3] and len(group["runs"]) == 3
    assert len(report["inputs"]) == 6  # every fold run's predictions file is listed


def test_paired_comparison_uses_the_pooled_predictions(crossval):
    runs, result, _ = crossval
    comparison = next(c for c in result.comparisons if c.metric == "accuracy")
    assert (comparison.reference, comparison.baseline) == ("accvit_tiny (3-fold CV)", "resnet50 (3-fold CV)")
    pooled = {m: pd.concat([_predictions(runs[(m, k)]) for k in range(1, K + 1)]) for m in ("accvit_tiny", "resnet50")}
    expected = _sklearn(pooled["accvit_tiny"])["accuracy"] - _sklearn(pooled["resnet50"])["accuracy"]
    assert comparison.difference == pytest.approx(expected, abs=1e-12)


def test_missing_folds_are_pooled_with_a_note(crossval, tmp_path):
    runs, _, _ = crossval
    result = write_report([runs[("accvit_tiny", 1)], runs[("accvit_tiny", 3)]], tmp_path / "report", n_boot=0)
    (run,) = result.datasets["csv"]
    assert run.name == "accvit_tiny (folds 1, 3 of 3)" and run.metrics["n"] == len(
        _predictions(runs[("accvit_tiny", 1)])) + len(_predictions(runs[("accvit_tiny", 3)]))
    assert any("runs on 2 of the 3 folds" in note for note in result.notes)
