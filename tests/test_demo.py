"""`accvit-med demo`: a reduced demo end to end (CLI and library), and every artifact it leaves."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets.synthetic import HAM_CLASSES, HAM_METADATA_COLUMNS
from accvit_med.demo import DEMO_CONTENTS, DEMO_KIND, DEMO_RECIPE, MARKER, run_demo
from accvit_med.errors import UserError
from accvit_med.fileio import sha256_file
from accvit_med.ownership import MARKER_NAME, write_marker

MODELS = ("accvit_femto", "convnext_tiny")
RUN_FILES = ("config.json", "history.csv", "checkpoints/last.pt", "checkpoints/best.pt",
             "predictions_val.csv", "predictions_test.csv", "metrics.json")


def _earlier_demo(out: Path) -> Path:
    """A demo folder as an earlier run_demo left it (marked, with a file of its own in runs/)."""
    write_marker(out, DEMO_KIND, DEMO_CONTENTS)
    (out / MARKER).write_text(json.dumps({"models": ["swin_t"]}))
    (out / "runs").mkdir()
    (out / "runs" / "stale.txt").write_text("from an earlier demo")
    return out


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``accvit-med demo --quick --force`` over an earlier demo: 35 images (5 per class), both
    default models, one epoch. The one trained demo of this file; it also replaces the earlier one."""
    out = _earlier_demo(tmp_path_factory.mktemp("demo") / "accvit-demo")
    result = CliRunner().invoke(app, ["demo", "--quick", "--force", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out, result


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_cli_prints_headline_and_report_location(quick_demo):
    out, result = quick_demo
    for model in MODELS:
        assert re.search(rf"^\s+{model}\s+\d+\.\d%", result.stdout, re.M), result.stdout
    assert f"report: {out / 'report' / 'report.md'}" in result.stdout
    assert result.stdout.rstrip().endswith(str(out / "report" / "report.html"))
    assert "from scratch" in result.stderr and "not the paper's protocol" in result.stderr


def test_data_is_in_the_ham10000_layout(quick_demo):
    out, _ = quick_demo
    data = out / "data"
    with open(data / "HAM10000_metadata.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == HAM_METADATA_COLUMNS
    meta = pd.DataFrame(rows[1:], columns=rows[0])
    assert len(meta) == 7 * 5 and meta["dx"].value_counts().to_dict() == {c: 5 for c in HAM_CLASSES}
    assert meta["lesion_id"].value_counts().max() > 1  # several photos of one lesion, as in HAM10000
    images = {}
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        found = sorted((data / part).glob("*.jpg"))
        assert found, part
        images.update({p.stem: p for p in found})
    assert set(images) == set(meta["image_id"])
    with Image.open(next(iter(images.values()))) as image:
        assert (image.format, image.size) == ("JPEG", (600, 450))


def test_split_is_grouped_by_lesion_and_matches_its_manifest(quick_demo):
    out, _ = quick_demo
    csv_path = out / "splits" / "ham10000.csv"
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    frame = pd.read_csv(csv_path)
    assert list(frame.columns[:4]) == ["path", "label", "group", "split"]
    assert manifest["classes"] == list(HAM_CLASSES) and manifest["grouped"] is True
    assert manifest["csv_sha256"] == sha256_file(csv_path)
    assert frame.groupby("group")["split"].nunique().max() == 1  # no lesion in two splits
    for part in ("train", "val", "test"):
        assert set(frame.loc[frame["split"] == part, "label"]) == set(HAM_CLASSES)


@pytest.mark.parametrize("model", MODELS)
def test_run_directory_holds_every_file(quick_demo, model):
    out, _ = quick_demo
    run = out / "runs" / "ham10000" / model / "seed42"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    # An ordinary registry run: the BatchNorm momentum is a recipe key, not a custom network.
    assert config["model"] == model and config["model_factory"] is None
    assert config["recipe"]["batchnorm_momentum"] == DEMO_RECIPE["batchnorm_momentum"] == 0.1
    assert config["recipe"]["lr"] == DEMO_RECIPE["lr"] and config["recipe"]["cache"] is True
    assert config["recipe"]["randaugment_ops"] == DEMO_RECIPE["randaugment_ops"]
    assert config["command"][:2] == ["accvit-med", "finetune"]
    assert len(pd.read_csv(run / "history.csv")) == 1
    for name in ("last", "best"):
        checkpoint = torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)
        assert checkpoint["classes"] == list(HAM_CLASSES) and checkpoint["epoch"] == 1
    split = pd.read_csv(out / "splits" / "ham10000.csv")
    predictions = pd.read_csv(run / "predictions_test.csv")
    assert sorted(predictions["path"]) == sorted(split.loc[split["split"] == "test", "path"])
    # The split's subgroup metadata follows the probabilities (docs/file-formats.md).
    assert list(predictions.columns) == ["path", "label", "pred"] + [f"prob_{c}" for c in HAM_CLASSES] + [
        "meta_age", "meta_sex", "meta_localization", "meta_dx_type"]
    metrics = json.loads((run / "metrics.json").read_text())
    expected = f1_score(predictions["label"], predictions["pred"], labels=list(HAM_CLASSES), average="macro",
                        zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(expected, abs=1e-9)


def test_report_folder_has_tables_and_figures(quick_demo):
    out, _ = quick_demo
    report = out / "report"
    for name in ("report.md", "report.html", "report.json", "table1.md", "table1.csv", "table1.tex", "summary.csv"):
        assert (report / name).is_file(), name
    figures = sorted((report / "figures").rglob("*.png"))
    assert report / "figures" / "confusion_grid.png" in figures
    for model in MODELS:
        assert report / "figures" / "ham10000" / f"{model}_confusion_counts.png" in figures
        # The report scores the runs' own predictions: same macro-F1 as each run's metrics.json.
        run_f1 = json.loads((out / "runs" / "ham10000" / model / "seed42" / "metrics.json").read_text())["macro_f1"]
        report_f1 = json.loads((report / "metrics" / "ham10000" / f"{model}.json").read_text())["macro_f1"]
        assert report_f1 == pytest.approx(run_f1)
    for figure in figures:
        with Image.open(figure) as image:
            assert image.format == "PNG"
    text = (report / "report.md").read_text()
    assert all(model in text for model in MODELS)


def test_report_intervals_have_width_on_the_small_test_set(quick_demo):
    """A few test images cannot know their accuracy to the last digit: every interval is wider than 0."""
    out, _ = quick_demo
    report = out / "report"
    saved = json.loads((report / "report.json").read_text())
    assert saved["settings"]["bootstrap"] == "rows"
    for model in MODELS:
        metrics = saved["datasets"]["ham10000"]["runs"][model]
        low, high = metrics["wilson"]["accuracy"]["low"], metrics["wilson"]["accuracy"]["high"]
        assert high - low > 0
        assert metrics["ci"]["macro_f1"]["high"] - metrics["ci"]["macro_f1"]["low"] > 0
        for scores in metrics["per_class"].values():
            assert scores["wilson"]["sensitivity"]["high"] - scores["wilson"]["sensitivity"]["low"] > 0
    with open(report / "summary.csv", newline="") as handle:
        rows = {row[0]: row for row in csv.reader(handle)}
    for model in MODELS:
        for cell in rows[f"ham10000 / {model}"][2:4]:  # accuracy (Wilson), macro-F1 (bootstrap)
            low, high = re.search(r"\[([\d.]+), ([\d.]+)\]", cell).groups()
            assert float(high) > float(low), cell
    # Calibration and operating points come from the runs' validation predictions.
    sections = saved["sections"]
    assert set(sections["calibration"]["ham10000"]) == set(MODELS)
    assert set(sections["operating_points"]["ham10000"]) == {"melanoma", "malignant"}


def test_refuses_to_overwrite_an_existing_demo(quick_demo):
    out, _ = quick_demo
    before = _files(out)
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert _files(out) == before


def test_never_deletes_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(app, ["demo", "--quick", "--force", "--out", str(tmp_path)])
    assert result.exit_code == 2 and MARKER_NAME in result.stderr and "not an accvit-med demo folder" in result.stderr
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_force_replaced_the_earlier_demo_and_the_headline_is_each_runs_score(quick_demo):
    out, result = quick_demo
    assert not (out / "runs" / "stale.txt").exists()
    assert json.loads((out / MARKER).read_text())["models"] == list(MODELS)
    assert sorted(p.name for p in (out / "runs" / "ham10000").iterdir()) == sorted(MODELS)
    for model in MODELS:
        # The headline is run_demo's DemoResult.macro_f1, read from the report: each run's own score.
        printed = re.search(rf"^\s+{model}\s+(\d+\.\d)%", result.stdout, re.M)
        metrics = json.loads((out / "runs" / "ham10000" / model / "seed42" / "metrics.json").read_text())
        assert float(printed.group(1)) == pytest.approx(100 * metrics["macro_f1"], abs=0.051)


def test_library_refuses_an_earlier_demo_without_force(tmp_path):
    out = _earlier_demo(tmp_path / "demo")
    before = _files(out)
    with pytest.raises(UserError, match="already exists"):
        run_demo(out, per_class=5)
    assert _files(out) == before


def test_rejects_settings_that_cannot_make_a_split(tmp_path):
    with pytest.raises(UserError, match="per-class"):
        run_demo(tmp_path / "a", per_class=2)
    with pytest.raises(UserError, match="no models"):
        run_demo(tmp_path / "b", models=[])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_baselines_get_fewer_epochs_than_acc_vit():
    from accvit_med.demo import _epochs_for

    assert _epochs_for("accvit_femto", 10) == 10
    assert _epochs_for("convnext_tiny", 10) == 7
    assert _epochs_for("convnext_tiny", 1) == 1


def test_printed_predict_command_works(quick_demo, tmp_path):
    """The demo's "try: accvit-med predict ..." line runs as printed (demo runs are ordinary runs)."""
    out, result = quick_demo
    line = next(printed for printed in result.stdout.splitlines() if printed.startswith("try: accvit-med predict "))
    args = shlex.split(line[len("try: "):])[1:]
    predicted = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p.csv"), "--workers", "0"])
    assert predicted.exit_code == 0, predicted.output + predicted.stderr
    frame = pd.read_csv(tmp_path / "p.csv")
    assert len(frame) == 1 and frame["pred"].iloc[0] in HAM_CLASSES
