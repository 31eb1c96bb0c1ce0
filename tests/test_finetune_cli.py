"""`accvit-med finetune / evaluate / prepare` end to end with the real accvit_femto, and the
one-line errors for bad options."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from accvit_med.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def femto_run(make_split, tmp_path_factory):
    """One epoch of accvit_femto at 224 on 9 tiny images (3 per class; 1 per class per part)."""
    split = make_split(("x", "y", "z"), 3, size=(48, 40), seed=2)
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(app, [
        "finetune", "--split", str(split), "--model", "accvit_femto", "--weights", "none",
        "--epochs", "1", "--batch-size", "3", "--workers", "0", "--out", str(out),
    ])
    return split, out, result


def test_finetune_femto_writes_the_run(femto_run):
    split, out, result = femto_run
    assert result.exit_code == 0, result.output
    assert "lr" in result.stdout and "5e-05" in result.stdout  # the resolved recipe is printed
    assert "training from scratch" in result.stderr
    assert "epoch   1/1" in result.stderr
    assert "test (best epoch 1): accuracy" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "accvit_femto" and config["recipe"]["label_smoothing"] == 0.1
    assert config["weights"] == {"spec": "none", "file": None, "sha256": None}
    for name in ("history.csv", "checkpoints/last.pt", "checkpoints/best.pt", "predictions_val.csv",
                 "predictions_test.csv", "metrics.json"):
        assert (out / name).is_file(), name


def test_evaluate_reproduces_predictions_test_csv(femto_run, tmp_path):
    split, out, _ = femto_run
    result = runner.invoke(app, ["evaluate", "--run", str(out), "--out", str(tmp_path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "predictions_test.csv")
    again = pd.read_csv(tmp_path / "predictions_test.csv")
    assert again[["path", "label", "pred"]].equals(written[["path", "label", "pred"]])
    probs = [c for c in written.columns if c.startswith("prob_")]
    assert (again[probs] - written[probs]).abs().to_numpy().max() < 1e-6
    assert json.loads((tmp_path / "metrics_test.json").read_text())["accuracy"] == json.loads(
        (out / "metrics.json").read_text())["accuracy"]


def test_existing_run_is_refused_in_one_line(femto_run):
    split, out, _ = femto_run
    before = (out / "metrics.json").read_bytes()
    result = runner.invoke(app, ["finetune", "--split", str(split), "--model", "accvit_femto",
                                 "--weights", "none", "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"accvit-med: error: run directory '{out}' already exists; "
        "pass --resume to continue it or --force to start again"
    ]
    assert (out / "metrics.json").read_bytes() == before


def _error_line(args) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: "), result.stderr
    return lines[0]


def test_bad_options_each_give_one_clear_line(femto_run, tmp_path, monkeypatch):
    split, out, _ = femto_run
    split = str(split)
    monkeypatch.chdir(tmp_path)
    on_split = ["finetune", "--split", split]
    assert "unknown model 'resnet9000'" in _error_line([*on_split, "--model", "resnet9000", "--out", "r1"])
    assert "no split for dataset 'ham10000'" in _error_line(["finetune", "--dataset", "ham10000"])
    assert "'missing.csv' not found" in _error_line(["finetune", "--split", "missing.csv"])
    assert "wider than MaxViT-T" in _error_line([*on_split, "--model", "accvit_small", "--out", "r2"])
    femto = [*on_split, "--model", "accvit_femto"]
    assert "--weights 'nope.pth'" in _error_line([*femto, "--weights", "nope.pth", "--out", "r3"])
    assert "multiples of 224" in _error_line([*femto, "--weights", "none", "--image-size", "100", "--out", "r4"])
    assert "cuda:99" in _error_line(["finetune", "--split", split, "--model", "accvit_femto", "--weights", "none",
                                     "--device", "cuda:99", "--out", "r6"])
    assert "--balance must be one of" in _error_line(["finetune", "--split", split, "--balance", "oversample"])
    assert "cannot resume" in _error_line(["finetune", "--split", split, "--model", "accvit_femto", "--weights", "none",
                                           "--out", "r5", "--resume"])
    assert "not a run directory" in _error_line(["evaluate", "--run", str(tmp_path)])
    assert not any((tmp_path / name).exists() for name in ("r1", "r2", "r3", "r4", "r5", "r6", "runs"))


def test_prepare_fills_the_cache(femto_run, tmp_path):
    split, _, _ = femto_run
    args = ["prepare", "--split", str(split), "--image-size", "64", "--cache-dir", str(tmp_path), "--workers", "1"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "9 image(s) cached, 0 already there" in first.stdout
    assert len(list((tmp_path / "64").rglob("*.png"))) == 9
    second = runner.invoke(app, args)
    assert "0 image(s) cached, 9 already there" in second.stdout


def test_a_run_of_the_other_kind_is_refused_in_one_line(femto_run, tmp_path):
    """Checkpoints and config.json say which task wrote them: a pretrain run is not evaluated,
    predicted from or resumed as a fine-tuning run."""
    import shutil

    import torch
    from PIL import Image

    split, out, _ = femto_run
    pretrain_run = tmp_path / "pretrain_run"
    shutil.copytree(out, pretrain_run)
    config = json.loads((pretrain_run / "config.json").read_text())
    (pretrain_run / "config.json").write_text(json.dumps({**config, "task": "pretrain"}))
    image = tmp_path / "one.png"
    Image.new("RGB", (48, 40), (120, 30, 200)).save(image)
    assert "is a pretrain run" in _error_line(["evaluate", "--run", str(pretrain_run)])
    assert "is a pretrain run" in _error_line(["predict", "--run", str(pretrain_run), str(image)])
    last = pretrain_run / "checkpoints" / "last.pt"
    torch.save({**torch.load(last, weights_only=True), "kind": "pretrain"}, last)
    line = _error_line(["finetune", "--split", str(split), "--out", str(pretrain_run), "--resume"])
    assert "holds a pretrain run" in line and "accvit-med pretrain" in line
