"""write_report and `accvit-med report`: layouts, figures, determinism, pairing, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm
from typer.testing import CliRunner

from accvit_med import UserError
from accvit_med.cli import app
from accvit_med.reports import classification_metrics, figures, write_predictions, write_report
from accvit_med.reports.calibration import reliability_bins

runner = CliRunner()
BUSI = ["benign", "malignant", "normal"]
EYEPACS = ["none", "mild", "moderate", "severe", "proliferative"]


def make_run(root: Path, dataset: str, model: str, classes, n: int = 90, skill: float = 1.5,
             seed: int = 0, label_seed: int = 0, config: bool = True, ordinal: bool = False) -> Path:
    """A run directory with predictions_test.csv (labels from label_seed: same test set) and config."""
    k = len(classes)
    y = np.random.default_rng(label_seed).integers(0, k, n)
    rng = np.random.default_rng(seed + 1000)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run = root / dataset / model / "run1"
    run.mkdir(parents=True)
    # Rows in a run-specific order: the report must match rows by path, not by position.
    order = np.random.default_rng(seed).permutation(n)
    write_predictions(run / "predictions_test.csv", [f"img_{i:04d}.png" for i in order], y[order],
                      probs[order].argmax(axis=1), probs[order], classes)
    if config:
        (run / "config.json").write_text(json.dumps(
            {"model": model, "dataset": dataset, "classes": list(classes), "ordinal": ordinal}))
    return run


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for i, model in enumerate(["accvit_tiny", "swin_t", "convnext_tiny"]):
        runs.append(make_run(root, "busi", model, BUSI, skill=[3.0, 1.0, 1.5][i], seed=i))
        runs.append(make_run(root, "eyepacs", model, EYEPACS, skill=[2.5, 1.0, 1.2][i], seed=10 + i,
                             label_seed=1))
    return runs


@pytest.fixture(scope="module")
def report(two_datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    return write_report(two_datasets, out, seed=3, n_boot=200)


@pytest.fixture
def without_figures(monkeypatch):
    """For tests of numbers, notes and pairing: the report skips its PNGs (about 1.5 s each on the
    CPU). The figures are checked by test_report_files_and_inputs, test_same_inputs_and_seed_give_
    identical_files, test_figures_carry_class_names and test_edge_cases_are_notes_not_crashes."""
    from accvit_med.reports import writer

    monkeypatch.setattr(writer, "save_figures", lambda drawers, folder, progress: [])


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_table1_layout(report):
    rows = read_csv(report.out_dir / "table1.csv")
    assert rows[0] == ["Model"] + [f"{ds} {m}" for ds in ("eyepacs", "busi") for m in ("Pr", "Re", "F1", "Acc")]
    assert [r[0] for r in rows[1:]] == ["swin_t", "convnext_tiny", "accvit_tiny"]  # the paper's order
    busi = {run.name: run.metrics for run in report.datasets["busi"]}
    accvit = rows[3]
    expected = [busi["accvit_tiny"][k] for k in ("macro_precision", "macro_recall", "macro_f1", "accuracy")]
    assert accvit[5:9] == [f"{100 * v:.2f}" for v in expected]
    tex = (report.out_dir / "table1.tex").read_text()
    for piece in (r"\toprule", r"\multicolumn{4}{c}{eyepacs}", r"\cmidrule(lr){2-5}",
                  r"\cmidrule(lr){6-9}", r"\midrule", r"\bottomrule", r"accvit\_tiny &"):
        assert piece in tex
    md = (report.out_dir / "table1.md").read_text().splitlines()
    assert md[2].startswith("| Model | eyepacs Pr |") and md[3].startswith("|:--|--:|")


def test_per_class_table_layout_matches_sklearn(report, two_datasets):
    rows = read_csv(report.out_dir / "busi_per_class.csv")
    models = ["accvit_tiny", "convnext_tiny", "swin_t"]  # Tables 5-7 put ACC-ViT first
    assert rows[0] == ["class"] + [f"{m} {c}" for m in models for c in ("precision", "recall", "f1-score")] + ["count"]
    assert [r[0] for r in rows[1:]] == BUSI + ["macro avg", "weighted avg", "accuracy"]
    # Independent check of the swin_t block against scikit-learn on the raw CSV.
    swin = [r for r in two_datasets if "busi" in str(r) and "swin_t" in str(r)][0]
    with (swin / "predictions_test.csv").open() as handle:
        data = list(csv.DictReader(handle))
    sk = skm.classification_report([d["label"] for d in data], [d["pred"] for d in data], labels=BUSI,
                                   output_dict=True, zero_division=0)
    for row in rows[1:4]:
        name = row[0]
        assert row[7:10] == [f"{sk[name][k]:.4f}" for k in ("precision", "recall", "f1-score")]
        assert row[10] == str(int(sk[name]["support"]))
    assert rows[4][7:10] == [f"{sk['macro avg'][k]:.4f}" for k in ("precision", "recall", "f1-score")]
    assert rows[5][7:10] == [f"{sk['weighted avg'][k]:.4f}" for k in ("precision", "recall", "f1-score")]
    assert rows[6][7] == f"{sk['accuracy']:.4f}" and rows[6][8:10] == ["", ""]
    tex = (report.out_dir / "busi_per_class.tex").read_text()
    assert r"\multicolumn{3}{c}{accvit\_tiny}" in tex and r"\cmidrule(lr){2-4}" in tex


def test_ordinal_dataset_gets_kappa_and_per_run_metrics_json(report):
    eyepacs = {run.name: run for run in report.datasets["eyepacs"]}
    run = eyepacs["accvit_tiny"]
    assert run.metrics["ordinal"] is True  # EyePACS grade names
    p = run.run.predictions
    assert run.metrics["quadratic_weighted_kappa"] == pytest.approx(
        skm.cohen_kappa_score(p.labels, p.preds, labels=EYEPACS, weights="quadratic"))
    assert "quadratic_weighted_kappa" in run.metrics["ci"]
    busi = report.datasets["busi"][0]
    assert busi.metrics["quadratic_weighted_kappa"] is None
    saved = json.loads((report.out_dir / "metrics/eyepacs/accvit_tiny.json").read_text())
    fresh = classification_metrics(p.labels, p.preds, p.probs, EYEPACS, ordinal=True, warn=False)
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_auc", "per_class", "ece"):
        assert saved[key] == fresh[key]  # JSON keeps Python floats exactly


def test_paired_differences(report):
    found = [c for c in report.comparisons if c.dataset == "busi" and c.metric == "accuracy"]
    assert {(c.reference, c.baseline) for c in found} == {("accvit_tiny", "swin_t"),
                                                               ("accvit_tiny", "convnext_tiny")}
    busi = {run.name: run.metrics for run in report.datasets["busi"]}
    vs_swin = [c for c in found if c.baseline == "swin_t"][0]
    assert vs_swin.difference == pytest.approx(busi["accvit_tiny"]["accuracy"] - busi["swin_t"]["accuracy"])
    assert vs_swin.ci_low <= vs_swin.difference <= vs_swin.ci_high
    assert vs_swin.significant is True  # skill 3.0 vs 1.0 on 90 images
    assert (report.out_dir / "busi_paired.md").read_text().count("accvit_tiny − ") == 2


def test_paired_resamples_are_shared(tmp_path, without_figures):
    # The same predictions under two names: every paired difference is exactly zero.
    run = make_run(tmp_path, "busi", "accvit_tiny", BUSI)
    result = write_report([f"accvit_tiny={run}", f"copy={run}"], tmp_path / "out", n_boot=100)
    for c in result.comparisons:
        assert (c.difference, c.ci_low, c.ci_high, c.significant) == (0.0, 0.0, 0.0, False)


def test_report_files_and_inputs(report, two_datasets):
    names = set(report.files)
    for ds in ("busi", "eyepacs"):
        for model in ("accvit_tiny", "swin_t", "convnext_tiny"):
            for kind in ("confusion_counts", "confusion_normalized", "reliability", "roc"):
                assert f"figures/{ds}/{model}_{kind}.png" in names
        for stem in ("per_class", "sensitivity_specificity_auc", "paired"):
            for suffix in ("md", "csv", "tex"):
                assert f"{ds}_{stem}.{suffix}" in names
    assert "figures/confusion_grid.png" in names
    for name in names:
        assert (report.out_dir / name).is_file(), name
    with Image.open(report.out_dir / "figures/confusion_grid.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # 3 models wide, 2 datasets high
    saved = json.loads((report.out_dir / "report.json").read_text())
    listed = {(i["predictions"], i["sha256"]) for i in saved["inputs"]}
    for run in two_datasets:
        path = run / "predictions_test.csv"
        assert (str(path), hashlib.sha256(path.read_bytes()).hexdigest()) in listed
    md = (report.out_dir / "report.md").read_text()
    assert hashlib.sha256((two_datasets[0] / "predictions_test.csv").read_bytes()).hexdigest() in md


def test_same_inputs_and_seed_give_identical_files(two_datasets, tmp_path):
    inputs = two_datasets[:2]
    first = write_report(inputs, tmp_path / "a", seed=5, n_boot=100)
    second = write_report(list(reversed(inputs)), tmp_path / "b", seed=5, n_boot=100)
    assert first.files == second.files

    def digest(folder: Path) -> dict:
        return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in first.files}

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_figures_carry_class_names():
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    for normalize in (False, True):
        figure = figures.confusion_figure(cm, BUSI, normalize=normalize, title="swin_t on busi")
        ax = figure.axes[0]
        assert [t.get_text() for t in ax.get_xticklabels()] == BUSI
        assert [t.get_text() for t in ax.get_yticklabels()] == BUSI
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
        texts = [t.get_text() for t in ax.texts]
        assert ("0.50" in texts) if normalize else ("5" in texts)  # 3 of 6 'malignant' rows right
    grid = figures.confusion_grid_figure([[(cm, BUSI), None], [(cm[:2, :2], ["a", "b"]), (cm[:2, :2], ["a", "b"])]],
                                         ["busi", "other"], ["m1", "m2"])
    assert [t.get_text() for t in grid.axes[2].get_xticklabels()] == ["a", "b"]
    assert not grid.axes[1].axison
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 50)
    y = rng.integers(0, 3, 50)
    bins = reliability_bins(probs, y)
    assert f"ECE = {100 * bins['ece']:.2f}%" in figures.reliability_figure(bins, "m").axes[0].get_title()
    roc = figures.roc_figure(probs, y, BUSI, [0.5, None, 0.7], "m")
    assert [t.get_text() for t in roc.axes[0].get_legend().get_texts()] == ["benign (AUC 0.500)", "normal (AUC 0.700)"]


def test_edge_cases_are_notes_not_crashes(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    # 'normal' is absent from the truth, 'malignant' is never predicted, 'benign' has one image.
    write_predictions(folder / "predictions_test.csv", ["a", "b", "c", "d"], [0, 1, 1, 1], [0, 0, 0, 2],
                      [[0.8, 0.1, 0.1], [0.5, 0.2, 0.3], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]], BUSI)
    # Stratified: the one-image class is a note (row resampling does vary it).
    result = write_report([folder], tmp_path / "out", n_boot=50, bootstrap="stratified")
    (run,) = result.datasets["unknown"]  # a folder with only predictions_test.csv is a run
    assert run.name == "mine"
    assert any("'malignant' is never predicted" in note for note in result.notes)
    assert any("'normal' is absent from the test set" in note for note in result.notes)
    assert any("benign have one test image each" in note for note in result.notes)
    rows = read_csv(tmp_path / "out" / "unknown_sensitivity_specificity_auc.csv")
    assert rows[3][0] == "normal" and rows[3][3] == "undefined"
    assert "no ACC-ViT run" not in " ".join(result.notes)  # one run: nothing to compare, no note


def test_cli_report(two_datasets, tmp_path, without_figures):
    out = tmp_path / "cli"
    result = runner.invoke(app, ["report", *map(str, two_datasets[:2]), "--out", str(out), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    assert "accvit_tiny" in result.stdout and "macro-F1" in result.stdout
    assert f"report: {out / 'report.md'}" in result.stdout
    assert (out / "table1.tex").is_file()


def test_cli_labels_and_bare_csv(tmp_path, without_figures):
    run = make_run(tmp_path, "busi", "x", BUSI, config=False)
    csv_path = run / "predictions_test.csv"
    result = runner.invoke(app, ["report", f"busi/accvit_tiny={csv_path}", f"other={csv_path}",
                                 "--dataset", "ignored", "--n-boot", "50", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    assert sorted((i["dataset"], i["name"]) for i in saved["inputs"]) == [("busi", "accvit_tiny"),
                                                                          ("ignored", "other")]


def one_line_error(args) -> str:
    result = runner.invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: "), result.stderr
    return lines[0]


def test_cli_bad_inputs_one_line(tmp_path, without_figures):
    out = ["--out", str(tmp_path / "out"), "--n-boot", "20"]
    assert "not found" in one_line_error([tmp_path / "missing.csv", *out])
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert "has no predictions_test.csv" in one_line_error([empty, *out])
    bad = tmp_path / "bad.csv"
    bad.write_text("path,truth,pred,prob_a,prob_b\nx,a,a,0.5,0.5\n")
    assert "lacks column(s) label" in one_line_error([bad, *out])
    bad.write_text("path,label,pred,prob_a,prob_b\nx,a,a,0.5,0.6\n")
    assert "sum to 1.1" in one_line_error([bad, *out])

    a = make_run(tmp_path / "x", "busi", "accvit_tiny", BUSI)
    b = make_run(tmp_path / "y", "busi", "swin_t", ["benign", "malignant"])
    assert "different classes" in one_line_error([a, b, *out])
    c = make_run(tmp_path / "z", "busi", "swin_t", BUSI, n=80)
    assert "do not hold the same test images" in one_line_error([a, c, *out])
    assert not (tmp_path / "out").exists()  # nothing half-written
    result = runner.invoke(app, ["report", str(a), str(c), "--no-paired", *out])
    assert result.exit_code == 0, result.output

    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("mine")
    assert "not an accvit-med report folder" in one_line_error([a, "--out", stranger])
    assert "names a single input" in one_line_error([a, c, "--model", "m", *out])
    assert "--ece-bins is 0" in one_line_error([a, "--ece-bins", "0", *out])
    assert "--n-boot is -1" in one_line_error([a, "--n-boot", "-1", "--out", tmp_path / "out"])


def test_config_classes_must_match_columns(tmp_path):
    run = make_run(tmp_path, "busi", "swin_t", BUSI)
    (run / "config.json").write_text(json.dumps({"model": "swin_t", "dataset": "busi",
                                                 "classes": ["normal", "benign", "malignant"]}))
    with pytest.raises(UserError, match="config.json says normal, benign, malignant"):
        write_report([run], tmp_path / "out", n_boot=10)


def test_class_order_is_aligned_within_a_dataset(tmp_path, without_figures):
    a = make_run(tmp_path / "1", "busi", "accvit_tiny", BUSI)
    b_dir = make_run(tmp_path / "2", "busi", "swin_t", BUSI, seed=4)
    # Rewrite b's columns in another class order: same content, different column order.
    from accvit_med.reports import read_predictions
    p = read_predictions(b_dir / "predictions_test.csv")
    order = [2, 0, 1]
    write_predictions(b_dir / "predictions_test.csv", p.paths, p.labels, p.preds, p.probs[:, order],
                      [BUSI[i] for i in order])
    (b_dir / "config.json").unlink()
    result = write_report([a, f"busi/swin_t={b_dir}"], tmp_path / "out", n_boot=20)
    swin = [r for r in result.datasets["busi"] if r.name == "swin_t"][0]
    assert swin.metrics["classes"] == BUSI
    assert swin.metrics["macro_auc"] == pytest.approx(
        skm.roc_auc_score(p.labels, p.probs, labels=BUSI, multi_class="ovr"))


def test_reference_picks_the_compared_model(tmp_path, without_figures):
    a = make_run(tmp_path, "busi", "swin_t", BUSI, skill=2.0)
    b = make_run(tmp_path, "busi", "maxvit_t", BUSI, skill=1.0, seed=1)
    plain = write_report([a, b], tmp_path / "plain", n_boot=50)
    assert plain.comparisons == []
    assert "busi: no ACC-ViT run, so no paired comparisons (name one with --reference)" in plain.notes
    chosen = write_report([a, b], tmp_path / "chosen", n_boot=50, reference="swin_t")
    assert {(c.reference, c.baseline) for c in chosen.comparisons} == {("swin_t", "maxvit_t")}
    with pytest.raises(UserError, match="--reference 'resnet50' matches no run"):
        write_report([a, b], tmp_path / "none", n_boot=50, reference="resnet50")
