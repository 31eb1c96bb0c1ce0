"""`accvit-med split`: files written, byte-identical reruns, --check, the leakage audit, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets import synthetic
from accvit_med.datasets.splits import SPLITS, read_split

runner = CliRunner()


def _split(*args: str):
    return runner.invoke(app, ["split", "--quiet", *map(str, args)])


@pytest.fixture
def ham(tmp_path) -> Path:
    return synthetic.make_ham10000(tmp_path / "ham", per_class=8, size=(32, 24), seed=5)


def test_defaults_read_datasets_and_write_splits(tmp_path, monkeypatch):
    synthetic.make_eyepacs(tmp_path / "datasets" / "eyepacs", per_class=8, size=(24, 24))
    monkeypatch.chdir(tmp_path)
    result = _split("--dataset", "eyepacs")
    assert result.exit_code == 0, result.output
    split = read_split(tmp_path / "splits" / "eyepacs.csv")
    manifest = split.manifest
    assert manifest["dataset"] == "eyepacs" and manifest["ordinal"] is True
    assert manifest["classes"] == ["none", "mild", "moderate", "severe", "proliferative"]
    assert manifest["data_root"] == str((tmp_path / "datasets" / "eyepacs").resolve())
    assert manifest["seed"] == 42 and manifest["grouped"] is True
    assert manifest["ratios"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert manifest["audit"]["groups_across_splits"] == 0
    # The two eyes of a patient, whatever their grades, share a split.
    assert split.frame.groupby("group")["split"].nunique().max() == 1
    assert (split.frame.groupby("group")["label"].nunique() == 2).any()
    # The printed table: every class, every split, and the totals.
    for word in ("none", "proliferative", "train", "val", "test", "40"):
        assert word in result.stdout


def test_split_table_counts_match_the_csv(ham, tmp_path):
    out = tmp_path / "out" / "ham.csv"
    result = _split("--dataset", "ham10000", "--data-dir", ham, "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    # HAM10000's subgroup metadata follows the four split columns (tests/test_split_metadata.py).
    assert frame.columns.tolist() == ["path", "label", "group", "split", "age", "sex", "localization", "dx_type"]
    assert len(frame) == 56 and set(frame["split"]) == set(SPLITS)
    manifest = json.loads(out.with_suffix(".json").read_text())
    crosstab = pd.crosstab(frame["label"], frame["split"])
    for s in SPLITS:
        for c in manifest["classes"]:
            assert manifest["counts"][s][c] == crosstab.at[c, s] >= 1
    assert frame.groupby("group")["split"].nunique().max() == 1
    assert "leakage audit: clean" in result.stdout


def test_same_inputs_same_bytes(ham, tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name / "ham10000.csv"
        assert _split("--dataset", "ham10000", "--data-dir", ham, "--out", out, "--seed", "7").exit_code == 0
        outputs.append((out.read_bytes(), out.with_suffix(".json").read_bytes()))
    assert outputs[0] == outputs[1]
    other = tmp_path / "c" / "ham10000.csv"
    assert _split("--dataset", "ham10000", "--data-dir", ham, "--out", other, "--seed", "8").exit_code == 0
    assert other.read_bytes() != outputs[0][0]


def test_no_group_is_exact_and_reports_the_expected_leak(ham, tmp_path):
    out = tmp_path / "ham.csv"
    result = _split("--dataset", "ham10000", "--data-dir", ham, "--out", out, "--no-group")
    assert result.exit_code == 0, result.output
    split = read_split(out)
    assert split.manifest["grouped"] is False
    counts = pd.crosstab(split.frame["label"], split.frame["split"])
    # 8 images per class: shares 4.8/1.6/1.6 -> 5/2/1 (largest remainder; the tie goes to val).
    assert (counts[["train", "val", "test"]].to_numpy() == [5, 2, 1]).all()
    leaks = split.frame.groupby("group")["split"].nunique().gt(1).sum()
    assert split.manifest["audit"]["groups_across_splits"] == leaks > 0
    assert "image-level" in result.stdout
    # ... and the audit of that file is a finding: exit code 1, naming a lesion.
    audit = _split("--audit", out)
    assert audit.exit_code == 1
    assert "group(s) have rows in several splits" in audit.stdout and "HAM_" in audit.stdout


def test_audit_of_a_clean_split(ham, tmp_path):
    out = tmp_path / "ham.csv"
    assert _split("--dataset", "ham10000", "--data-dir", ham, "--out", out).exit_code == 0
    result = _split("--audit", out)
    assert result.exit_code == 0
    assert "clean" in result.stdout


def test_audit_finds_byte_identical_files_in_two_splits(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path / "data", classes=("x", "y"), per_class=6, size=(16, 16))
    shutil.copy(root / "images" / "x_0000.png", root / "images" / "copy.png")
    rows = [("images/x_0000.png", "x", "a", "train"), ("images/copy.png", "x", "b", "test"),
            ("images/y_0000.png", "y", "c", "val")]
    pd.DataFrame(rows, columns=["path", "label", "group", "split"]).to_csv(tmp_path / "theirs.csv", index=False)
    result = _split("--audit", tmp_path / "theirs.csv", "--data-dir", root)
    assert result.exit_code == 1
    assert "byte-identical" in result.stdout and "images/copy.png (test)" in result.stdout
    # Without a manifest, the data folder is needed: a usage error.
    result = _split("--audit", tmp_path / "theirs.csv")
    assert result.exit_code == 2 and "--data-dir" in result.stderr


def test_grouped_split_keeps_byte_identical_files_together(tmp_path):
    root = synthetic.make_busi(tmp_path / "busi", per_class=8, size=(32, 32), exact_duplicates=3)
    for seed in range(4):
        out = tmp_path / f"busi{seed}.csv"
        result = _split("--dataset", "busi", "--data-dir", root, "--out", out, "--seed", seed)
        assert result.exit_code == 0, result.output
        frame = read_split(out).frame.set_index("path")
        for name in ("benign", "malignant", "normal"):
            base = f"Dataset_BUSI_with_GT/{name}/{name}"
            assert frame.at[f"{base} (9).png", "split"] == frame.at[f"{base} (1).png", "split"]
        assert read_split(out).manifest["grouped"] is True


def test_busi_split_keeps_masks_and_dedupe_is_recorded(tmp_path):
    root = synthetic.make_busi(tmp_path / "busi", per_class=6, size=(48, 48), near_duplicates=3)
    out = tmp_path / "busi.csv"
    result = _split("--dataset", "busi", "--data-dir", root, "--out", out, "--dedupe")
    assert result.exit_code == 0, result.output
    split = read_split(out)
    assert split.frame.columns.tolist() == ["path", "label", "group", "split", "mask_paths"]
    assert split.manifest["dedupe"] is True and split.manifest["grouped"] is True
    assert "near-duplicate" in result.stdout


def test_check_leaves_out_corrupt_images(tmp_path):
    root = synthetic.make_eyepacs(tmp_path / "eye", per_class=6, size=(32, 32), corrupt=2)
    out = tmp_path / "eye.csv"
    result = _split("--dataset", "eyepacs", "--data-dir", root, "--out", out, "--check")
    assert result.exit_code == 0, result.output
    split = read_split(out)
    excluded = split.manifest["excluded"]
    assert len(excluded) == 2 and len(split.frame) == 28
    assert not set(e["path"] for e in excluded) & set(split.frame["path"])
    assert "left out 2 unreadable image(s)" in result.stdout
    assert all(e["path"] in result.stdout for e in excluded)
    # Without --check the corrupt files stay in (opening 35k images is the slow part).
    assert _split("--dataset", "eyepacs", "--data-dir", root, "--out", out).exit_code == 0
    assert len(read_split(out).frame) == 30 and "excluded" not in read_split(out).manifest


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "ham10000", "--data-dir", "{tmp}/missing"], "data folder"),
        (["--dataset", "ham10000", "--data-dir", "{tmp}/empty"], "HAM10000_metadata.csv"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/empty"], "unknown dataset 'mnist'"),
        (["--dataset", "ham10000", "--data-dir", "{ham}", "--ratios", "60,40"], "--ratios"),
        (["--data-dir", "{ham}"], "--dataset is required"),
        (["--audit", "{tmp}/none.csv"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, ham, args, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "splits" / "out.csv"
    args = [a.format(tmp=tmp_path, ham=ham) for a in args]
    result = _split(*args, "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: ") and message in lines[0]
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_too_small_class_is_named_at_the_cli(tmp_path):
    root = synthetic.make_ham10000(tmp_path / "ham", per_class={"nv": 6, "mel": 6, "df": 2}, size=(16, 12))
    result = _split("--dataset", "ham10000", "--data-dir", root, "--out", tmp_path / "x.csv", "--no-group")
    assert result.exit_code == 2
    assert "class 'akiec' of ham10000 has 0 image(s)" in result.stderr


def test_paper_protocol_is_the_per_image_60_20_20_split_with_its_name_recorded(ham, tmp_path):
    paper, plain = tmp_path / "paper.csv", tmp_path / "plain.csv"
    result = _split("--dataset", "ham10000", "--data-dir", ham, "--out", paper, "--protocol", "paper", "--seed", "7")
    assert result.exit_code == 0, result.output
    plain_result = _split("--dataset", "ham10000", "--data-dir", ham, "--out", plain, "--no-group", "--seed", "7")
    assert plain_result.exit_code == 0
    assert paper.read_bytes() == plain.read_bytes()  # the same rows as today's --no-group
    manifest = read_split(paper).manifest
    assert (manifest["protocol"], manifest["grouped"], manifest["seed"]) == ("paper", False, 7)
    assert manifest["ratios"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert json.loads(plain.with_suffix(".json").read_text())["protocol"] == "grouped"
    frame = read_split(paper).frame
    counts = pd.crosstab(frame["label"], frame["split"])[["train", "val", "test"]].to_numpy()
    assert (counts == [5, 2, 1]).all()  # stratified: every class 60:20:20 up to rounding of 8 images
    assert "paper protocol" in result.stdout


@pytest.mark.parametrize("extra, message", [
    (["--group"], "--protocol paper splits per image; drop --group"),
    (["--ratios", "70,15,15"], "--protocol paper fixes the ratios at 60,20,20"),
    (["--dedupe"], "--dedupe groups near-identical images"),
    (["--protocol", "papers"], "--protocol must be one of grouped, paper, got 'papers'"),
])
def test_paper_protocol_conflicts_are_refused_in_one_line(ham, tmp_path, extra, message):
    out = tmp_path / "x.csv"
    args = ["--dataset", "ham10000", "--data-dir", ham, "--out", out]
    args += extra if extra[0] == "--protocol" else ["--protocol", "paper", *extra]
    result = _split(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: ") and message in lines[0], lines
    assert not out.exists() and not out.with_suffix(".json").exists()
