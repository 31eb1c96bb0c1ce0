"""End to end: two gloo processes under torchrun pre-train accvit_femto for one epoch, then resume.

Global batch 4 = 2 processes x 1 image x 2 accumulated micro-batches. The folder is ImageNet-style
and tiny (2 classes, 2 train + 1 val image each, 32 px sources that the 224 crops upscale), so the
two runs take seconds of compute; most of the time is start-up.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.training.pretrain.schedule import lr_at

pytestmark = pytest.mark.slow


def _imagenet_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 2), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")
    return root


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "accvit_med", "pretrain", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def _lr(epoch: float) -> float:
    return lr_at(epoch, base_lr=1e-3, min_lr=1e-5, epochs=2, warmup_epochs=1, warmup_decay=0.01)


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run after its first invocation (1 of 2 epochs), snapshotted, then after the resume."""
    root = tmp_path_factory.mktemp("pretrain")
    data = _imagenet_folder(root / "imagenet")
    run = root / "run"
    # The per-process batch is a runtime option: the resume passes it again, like the rest of the command.
    common = ["--data-path", str(data), "--model", "accvit_femto", "--out", str(run), "--workers", "0",
              "--batch-size", "1"]
    first = _torchrun(*common, "--epochs", "2", "--warmup-epochs", "1", "--global-batch-size", "4",
                      "--ema-steps", "1", "--stop-after", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = {
        "history": _history(run),
        "config": json.loads((run / "config.json").read_text()),
        "last": torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True),
    }
    second = _torchrun(*common, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"data": data, "run": run, "first": after_first, "second_stdout": second.stdout}


def test_first_invocation_writes_a_resumable_checkpoint(runs):
    first = runs["first"]
    assert [row["epoch"] for row in first["history"]] == ["1"]
    state = first["last"]
    assert {"model", "optimizer", "scaler", "epoch", "rng", "config", "model_ema", "classes"} <= set(state)
    assert state["epoch"] == 1 and state["classes"] == ["n01440764", "n01443537"]
    assert state["kind"] == "pretrain"
    # During warm-up the EMA keeps copying the weights (torchvision's reset of n_averaged).
    for key, value in state["model"].items():
        assert torch.equal(state["model_ema"][key], value), key
    config = first["config"]
    # Global batch 4 over 2 processes x 1 image: each optimizer step accumulates 2 micro-batches.
    assert config["distributed"] == {"world_size": 2, "batch_size_per_process": 1, "accumulation_steps": 2}
    assert config["recipe"]["epochs"] == 2 and config["recipe"]["model"] == "accvit_femto"
    # 4 train images = one optimizer step per epoch, at the epoch's start of the schedule.
    row = first["history"][0]
    assert float(row["lr"]) == pytest.approx(_lr(0.0)) and _lr(0.0) == pytest.approx(1e-5)
    assert float(row["val_top1"]) in (0.0, 50.0, 100.0) and float(row["val_top5"]) == 100.0


def test_resume_adds_the_second_epoch_once(runs):
    run, first = runs["run"], runs["first"]
    history = _history(run)
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert history[0] == first["history"][0]  # the resumed run leaves epoch 1 as it was
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 2
    assert float(history[1]["lr"]) == pytest.approx(_lr(1.0))  # the peak, where the cosine starts
    assert any(not torch.equal(value, first["last"]["model"][key]) for key, value in state["model"].items())
    assert (run / "checkpoints" / "best.pt").is_file()
    assert "2 epoch(s) done" in runs["second_stdout"]


@pytest.mark.parametrize("file,key", [("last.pt", "model"), ("best_weights.safetensors", "model_ema")])
def test_checkpoint_loads_into_a_new_head(runs, file, key):
    """What `accvit-med finetune --weights FILE` does: the backbone is kept, the head swapped."""
    from accvit_med.models import create_model

    checkpoints = runs["run"] / "checkpoints"
    model = create_model("accvit_femto", num_classes=3, weights=checkpoints / file)
    # best_weights.safetensors holds the EMA weights of best.pt's epoch.
    source = "best.pt" if key == "model_ema" else "last.pt"
    saved = torch.load(checkpoints / source, map_location="cpu", weights_only=True)[key]
    own = model.state_dict()
    kept = [k for k in saved if own[k].shape == saved[k].shape]
    assert len(kept) >= len(saved) - 2  # only the classifier's last Linear differs
    assert all(torch.equal(own[k], saved[k]) for k in kept)
    assert any(own[k].shape[0] == 3 for k in own if k not in kept)


def test_best_weights_say_what_they_are(runs):
    from accvit_med.rundir.checkpoints import read_weights_metadata

    metadata = read_weights_metadata(runs["run"] / "checkpoints" / "best_weights.safetensors")
    best = torch.load(runs["run"] / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    rows = _history(runs["run"])
    assert metadata["model"] == "accvit_femto" and metadata["source"] == "model_ema"
    assert metadata["classes"] == best["classes"] and metadata["epoch"] == best["epoch"]
    assert metadata["val_top1"] == max(float(r["ema_val_top1"]) for r in rows)


def test_eval_only_reproduces_the_logged_val_metrics(runs):
    path = runs["run"] / "checkpoints" / "last.pt"
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(runs["data"]), "--eval-only",
                                      "--weights", str(path), "--workers", "0"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0].strip(): line for line in result.stdout.splitlines()}
    last = _history(runs["run"])[-1]
    for which, prefix in (("model", "val"), ("model_ema", "ema_val")):
        assert f"top-1 {float(last[prefix + '_top1']):.3f}%" in lines[which]
        loss = float(lines[which].split("loss ")[1].split()[0])
        assert loss == pytest.approx(float(last[prefix + "_loss"]), abs=2e-4)


def test_existing_run_is_not_overwritten_and_resume_keeps_the_recipe(runs):
    common = ["pretrain", "--data-path", str(runs["data"]), "--model", "accvit_femto", "--out", str(runs["run"])]
    again = CliRunner().invoke(app, common)
    assert again.exit_code == 2 and "--resume" in again.stderr
    changed = CliRunner().invoke(app, [*common, "--resume", "--lr", "0.01"])
    assert changed.exit_code == 2 and "--lr 0.01" in changed.stderr
