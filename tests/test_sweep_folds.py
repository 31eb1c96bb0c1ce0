"""`accvit-med sweep` over the folds of a cross-validation: one run per fold, model and seed in
runs/<dataset>/<model>/fold<k>-seed<s>/, each on its fold's split file (read back from the
recipe files the sweep writes and the cv.json that `split --folds` wrote), and the plan's checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets.create_split import create_folds
from accvit_med.datasets.synthetic import make_image_folder
from accvit_med.sweep import load_plan
from accvit_med.sweep.launch import write_recipe_files

runner = CliRunner()
PLAN = """
datasets = ["folder"]
models = ["accvit_femto"]
seeds = [0, 1]
{extra}
out = "runs"
[recipe]
epochs = 1
weights = "none"
workers = 0
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweepfolds")
    make_image_folder(root / "images", classes=("a", "b"), per_class=6, size=(16, 16), seed=3)
    create_folds("folder", 3, root / "images", root / "splits" / "folder-3fold", seed=0, progress=False)
    return root


def _sweep(cwd: Path, plan_text: str, *args):
    (cwd / "plan.toml").write_text(plan_text)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, ["sweep", "plan.toml", *args])
    finally:
        os.chdir(old)


def test_folds_plan_has_one_run_per_fold_model_and_seed_on_its_fold_file(work):
    result = _sweep(work, PLAN.format(extra="folds = 3"), "--dry-run")
    assert result.exit_code == 0, result.output
    cv = json.loads((work / "splits" / "folder-3fold" / "cv.json").read_text())
    for fold in (1, 2, 3):
        for seed in (0, 1):
            run = work / "runs" / "folder" / "accvit_femto" / f"fold{fold}-seed{seed}"
            recipe = work / "runs" / ".sweep" / "recipes" / f"folder-fold{fold}.json"
            assert f"folder/accvit_femto/fold{fold}-seed{seed}: start" in result.stdout
            assert f"--config {recipe} --model accvit_femto --seed {seed} --out {run}" in result.stdout
    assert "6 of 6 run(s) to start or resume" in result.stdout
    old = os.getcwd()
    os.chdir(work)
    try:
        plan = load_plan("plan.toml")
    finally:
        os.chdir(old)
    write_recipe_files(plan)
    for entry in cv["folds"]:
        recipe = json.loads((plan.sweep_dir / "recipes" / f"folder-fold{entry['fold']}.json").read_text())
        assert recipe["split"] == str((work / "splits" / "folder-3fold" / entry["split"]).resolve())
    status = _sweep(work, PLAN.format(extra="folds = 3"), "--status")
    assert status.exit_code == 0, status.output
    assert "folder/accvit_femto/fold3-seed1" in status.stdout and "pending" in status.stdout


def test_the_cv_manifest_named_in_splits_needs_no_folds_key(work):
    extra = '[splits]\nfolder = "splits/folder-3fold/cv.json"'
    result = _sweep(work, PLAN.format(extra="") + extra, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "folder/accvit_femto/fold2-seed0: start" in result.stdout


@pytest.mark.parametrize("extra, message", [
    ("folds = 5", "cross-validation 'splits/folder-5fold/cv.json' for data set 'folder' does not exist"),
    ("folds = 1", "folds must be a whole number of at least 2"),
    ('folds = 2\n[splits]\nfolder = "splits/folder-3fold/cv.json"', "is a 3-fold cross-validation, but the plan says"),
    ('folds = 3\n[splits]\nfolder = "splits/folder-3fold/fold1.csv"', "names the split file"),
])
def test_fold_plan_mistakes_are_one_line(work, extra, message):
    text = PLAN.format(extra="" if "[splits]" in extra else extra)
    if "[splits]" in extra:
        head, table = extra.split("\n", 1)
        text = PLAN.format(extra=head) + table
    result = _sweep(work, text, "--dry-run")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
