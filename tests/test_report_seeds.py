"""`accvit-med report` over runs that differ only by seed: mean ± sd rows checked against
scikit-learn's metrics of each seed's predictions, per-seed CSV rows, same-seed pairing, and the
learning-curve figures drawn from history.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from accvit_med.reports import figures, write_predictions, write_report

BUSI = ["benign", "malignant", "normal"]
SEEDS = (0, 1, 2)


def make_seed_run(root: Path, model: str, seed: int, skill: float, n: int = 60) -> Path:
    y = np.random.default_rng(0).integers(0, 3, n)  # one test set for every run
    logits = np.random.default_rng(100 * seed + len(model)).normal(size=(n, 3))
    logits[np.arange(n), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run = root / "busi" / model / f"seed{seed}"
    run.mkdir(parents=True)
    write_predictions(run / "predictions_test.csv", [f"img_{i:03d}.png" for i in range(n)], y,
                      probs.argmax(axis=1), probs, BUSI)
    recipe = {"seed": seed, "lr": 5e-5, "epochs": 3, "device": f"cuda:{seed}", "workers": seed}
    (run / "config.json").write_text(json.dumps(
        {"model": model, "dataset": "busi", "classes": BUSI, "ordinal": False, "recipe": recipe}))
    with open(run / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_seconds"])
        for epoch in (1, 2, 3):
            writer.writerow(
                [epoch, 1.0 / epoch + seed / 10, 0.5 + epoch / 10, 1.2 / epoch, 0.4 + epoch / 10, 5e-5, 10, 1])
    return run


def sklearn_scores(run: Path) -> dict:
    with open(run / "predictions_test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    y, p = [r["label"] for r in rows], [r["pred"] for r in rows]
    precision = skm.precision_score(y, p, labels=BUSI, average=None, zero_division=0)
    return {"macro_f1": skm.f1_score(y, p, average="macro"), "accuracy": skm.accuracy_score(y, p),
            "precision_benign": precision[0]}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    runs = {(m, s): make_seed_run(root, m, s, skill) for m, skill in (("accvit_tiny", 2.0), ("swin_t", 1.0))
            for s in SEEDS}
    runs[("convnext_tiny", 0)] = make_seed_run(root, "convnext_tiny", 0, 1.5)
    result = write_report(list(runs.values()), root / "report", n_boot=50)
    return runs, result, root / "report"


def read_rows(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as handle:
        return {row[0]: row[1:] for row in csv.reader(handle)}


def test_table1_and_summary_show_mean_and_sd_over_seeds(seeded):
    runs, _, out = seeded
    table1 = read_rows(out / "table1.csv")
    header = table1["Model"]
    f1, acc = header.index("busi F1"), header.index("busi Acc")
    for model in ("accvit_tiny", "swin_t"):
        scores = [sklearn_scores(runs[(model, s)]) for s in SEEDS]
        for column, key in ((f1, "macro_f1"), (acc, "accuracy")):
            values = 100 * np.array([s[key] for s in scores])
            expected = f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"
            assert table1[f"{model} (3 seeds)"][column] == expected
            for seed, value in zip(SEEDS, values):  # per-seed rows in the CSV only
                assert float(table1[f"{model}@seed{seed}"][column]) == pytest.approx(value, abs=0.006)
    convnext_f1 = 100 * sklearn_scores(runs[("convnext_tiny", 0)])["macro_f1"]
    assert float(table1["convnext_tiny"][f1]) == pytest.approx(convnext_f1, abs=0.006)
    markdown = (out / "table1.md").read_text()
    assert "swin_t (3 seeds)" in markdown and "swin_t@seed0" not in markdown
    summary = read_rows(out / "summary.csv")
    assert "±" in summary["busi / swin_t (3 seeds)"][2] and "busi / swin_t@seed1" in summary
    assert "busi / swin_t@seed1" not in (out / "summary.md").read_text()


def test_per_class_tables_show_the_mean(seeded):
    runs, _, out = seeded
    per_class = read_rows(out / "busi_per_class.csv")
    column = per_class["class"].index("swin_t (3 seeds) precision")
    expected = np.mean([sklearn_scores(runs[("swin_t", s)])["precision_benign"] for s in SEEDS])
    assert float(per_class["benign"][column]) == pytest.approx(expected, abs=1e-4)


def test_paired_comparisons_pair_the_same_seed(seeded):
    _, result, out = seeded
    pairs = {(c.reference, c.baseline) for c in result.comparisons}
    expected = {(f"accvit_tiny@seed{s}", f"swin_t@seed{s}") for s in SEEDS}
    expected |= {(f"accvit_tiny@seed{s}", "convnext_tiny") for s in SEEDS}
    assert pairs == expected
    groups = json.loads((out / "report.json").read_text())["seed_groups"]["busi"]
    assert {g["label"]: g["seeds"] for g in groups} == {
        "accvit_tiny (3 seeds)": [0, 1, 2], "swin_t (3 seeds)": [0, 1, 2]}


def test_learning_curves_per_run_and_overlay(seeded):
    runs, result, out = seeded
    for (model, seed) in runs:
        name = "convnext_tiny" if model == "convnext_tiny" else f"{model}_seed{seed}"  # '@' is not in file names
        assert (out / "figures" / "busi" / f"{name}_curves.png").stat().st_size > 1000
        assert f"figures/busi/{name}_curves.png" in (out / "report.md").read_text()
    assert (out / "figures" / "busi" / "curves_overlay.png").stat().st_size > 1000
    history = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "val_loss": [1.2, 0.6, 0.4],
               "train_acc": [0.6, 0.7, 0.8], "val_acc": [0.5, 0.6, 0.7]}
    figure = figures.curves_figure(history, "x")
    loss, accuracy = figure.axes
    assert [list(line.get_ydata()) for line in loss.lines] == [history["train_loss"], history["val_loss"]]
    assert [list(line.get_ydata()) for line in accuracy.lines] == [history["train_acc"], history["val_acc"]]
    overlay = figures.curves_overlay_figure([("a", history), ("b", history)], "busi")
    assert len(overlay.axes[0].lines) == 4  # val and train per run
