"""`accvit-med split --folds K`: K ordinary split files and cv.json, checked from the files written
against scikit-learn's StratifiedGroupKFold / StratifiedKFold on the same groups."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets import synthetic
from accvit_med.datasets.folds import fold_of_split, fold_paths, read_cv
from accvit_med.datasets.splits import read_split

runner = CliRunner()


def _split(*args: str):
    return runner.invoke(app, ["split", "--quiet", *map(str, args)])


@pytest.fixture(scope="module")
def csvdata(tmp_path_factory) -> Path:
    # Groups of two images, 12 per class: 6 groups per class.
    root = tmp_path_factory.mktemp("csvdata")
    return synthetic.make_csv_dataset(root / "data", classes=("a", "b", "c"), per_class=12, size=(16, 16),
                                      images_per_group=2)


def _folds(out: Path) -> list[pd.DataFrame]:
    return [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(out.glob("fold*.csv"))]


def test_every_image_is_in_one_test_fold_and_no_group_crosses_parts(csvdata, tmp_path):
    out = tmp_path / "cv"
    result = _split("--dataset", "csv", "--data-dir", csvdata, "--out", out, "--folds", 3, "--seed", 3)
    assert result.exit_code == 0, result.output
    frames = _folds(out)
    assert len(frames) == 3
    everything = set(frames[0]["path"])
    tests = pd.concat([f.loc[f["split"] == "test", "path"] for f in frames])
    assert len(tests) == len(everything) and set(tests) == everything  # each image once
    for frame in frames:
        assert set(frame["path"]) == everything and set(frame["split"]) == {"train", "val", "test"}
        assert frame.groupby("group")["split"].nunique().max() == 1  # no group in two parts
        assert (pd.crosstab(frame["label"], frame["split"]) > 0).all().all()  # every class in every part
        rest = frame[frame["split"] != "test"]
        assert abs((rest["split"] == "val").mean() - 0.2) < 0.12
    # The test parts are those of scikit-learn's StratifiedGroupKFold on the same groups and seed.
    table = frames[0].sort_values("path").reset_index(drop=True)
    labels = pd.Categorical(table["label"], categories=["a", "b", "c"]).codes
    groups = pd.factorize(table["group"], sort=True)[0]
    reference = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=3)
    expected = [set(table["path"].iloc[test]) for _, test in reference.split(table, labels, groups)]
    assert [set(f.loc[f["split"] == "test", "path"]) for f in frames] == expected
    for k in range(3):
        assert "leakage audit, fold " f"{k + 1}: clean" in result.stdout


def test_fold_files_are_ordinary_splits_listed_with_their_sha256(csvdata, tmp_path):
    out = tmp_path / "cv"
    assert _split("--dataset", "csv", "--data-dir", csvdata, "--out", out, "--folds", 3).exit_code == 0
    cv = read_cv(out / "cv.json")
    assert (cv["k"], cv["seed"], cv["val_fraction"], cv["grouped"]) == (3, 42, 0.2, True)
    assert [p.name for p in fold_paths(out / "cv.json")] == ["fold1.csv", "fold2.csv", "fold3.csv"]
    for entry in cv["folds"]:
        path = out / entry["split"]
        split = read_split(path)  # its own manifest, as finetune reads it
        assert entry["csv_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == split.sha256
        assert split.manifest["cv"]["fold"] == entry["fold"]
        assert entry["counts"] == split.manifest["counts"]
        assert entry["audit"]["groups_across_splits"] == 0
        assert fold_of_split(path, split.sha256)[2] == entry["fold"]
    assert fold_of_split(out / "fold1.csv", "0" * 64) is None


def test_same_inputs_same_bytes_and_the_seed_matters(csvdata, tmp_path):
    def files(out: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    for name in ("a", "b"):
        assert _split("--dataset", "csv", "--data-dir", csvdata, "--out", tmp_path / name, "--folds", 4,
                      "--seed", 9).exit_code == 0
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert _split("--dataset", "csv", "--data-dir", csvdata, "--out", tmp_path / "c", "--folds", 4,
                  "--seed", 10).exit_code == 0
    assert files(tmp_path / "c")["fold1.csv"] != files(tmp_path / "a")["fold1.csv"]


def test_patients_with_two_grades_stay_in_one_part(tmp_path):
    root = synthetic.make_eyepacs(tmp_path / "eye", per_class=10, size=(16, 16))
    out = tmp_path / "cv"
    result = _split("--dataset", "eyepacs", "--data-dir", root, "--out", out, "--folds", 3, "--val-fraction", 0.25)
    assert result.exit_code == 0, result.output
    for frame in _folds(out):
        assert frame.groupby("group")["split"].nunique().max() == 1
    assert (pd.concat(_folds(out)).groupby("group")["label"].nunique() == 2).any()
    assert json.loads((out / "cv.json").read_text())["val_fraction"] == 0.25


def test_paper_protocol_folds_are_per_image_stratified_k_fold(tmp_path):
    root = synthetic.make_ham10000(tmp_path / "ham", per_class=8, size=(16, 12), seed=5)
    out = tmp_path / "cv"
    result = _split("--dataset", "ham10000", "--data-dir", root, "--out", out, "--folds", 4, "--protocol", "paper")
    assert result.exit_code == 0, result.output
    cv = read_cv(out / "cv.json")
    assert (cv["protocol"], cv["grouped"]) == ("paper", False)
    frames = _folds(out)
    table = frames[0].sort_values("path").reset_index(drop=True)
    reference = StratifiedKFold(n_splits=4, shuffle=True, random_state=42).split(table, table["label"])
    assert [set(f.loc[f["split"] == "test", "path"]) for f in frames] == \
        [set(table["path"].iloc[test]) for _, test in reference]
    counts = np.array([pd.crosstab(f["label"], f["split"])["test"].to_numpy() for f in frames])
    assert (counts == 2).all()  # 8 images per class, 4 folds: exactly 2 of each class per test part


@pytest.mark.parametrize("args, message", [
    (["--folds", 7], "--folds 7 is more than the 6 group(s) of class 'a'"),
    (["--folds", 1], "--folds must be at least 2"),
    (["--folds", 3, "--ratios", "60,20,20"], "--ratios sets one split's proportions"),
    (["--val-fraction", 0.3], "--val-fraction applies to --folds K"),
    (["--folds", 3, "--val-fraction", 1.5], "--val-fraction must lie strictly between 0 and 1"),
    (["--folds", 3, "--protocol", "paper", "--group"], "--protocol paper splits per image"),
])
def test_bad_fold_options_are_one_line(csvdata, tmp_path, args, message):
    out = tmp_path / "cv"
    result = _split("--dataset", "csv", "--data-dir", csvdata, "--out", out, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: ") and message in lines[0], lines
    assert not out.exists()


def test_out_must_be_a_folder_with_folds(csvdata, tmp_path):
    result = _split("--dataset", "csv", "--data-dir", csvdata, "--out", tmp_path / "x.csv", "--folds", 3)
    assert result.exit_code == 2 and "names a folder" in result.stderr
