"""`accvit-med pretrain --teacher`: the distillation loss against its definition, and a one-epoch run
of an inherited accvit_femto student distilled from maxvit_t on a plain folder of unlabelled images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.training.pretrain.distill import distillation_loss


def test_distillation_loss_is_tempered_kl_mixed_with_the_label_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    t = 2.0
    # KL(p_teacher || p_student) at temperature t, per image, averaged, times t^2 (numpy reference).
    p = np.exp(teacher.numpy() / t) / np.exp(teacher.numpy() / t).sum(1, keepdims=True)
    q = np.exp(student.numpy() / t) / np.exp(student.numpy() / t).sum(1, keepdims=True)
    kl = float((p * (np.log(p) - np.log(q))).sum(1).mean()) * t * t
    assert distillation_loss(student, teacher, t, 1.0) == pytest.approx(kl, rel=1e-5)
    ce = torch.nn.CrossEntropyLoss()
    mixed = distillation_loss(student, teacher, t, 0.25, labels, ce)
    assert float(mixed) == pytest.approx(0.25 * kl + 0.75 * float(ce(student, labels)), rel=1e-5)
    assert float(distillation_loss(teacher, teacher, t, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_pretrain_with_a_teacher_on_unlabelled_images(offline_cache, tmp_path):
    images = tmp_path / "unlabelled" / "any" / "nesting"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):  # 4 train + 1 held out (every 10th, sorted)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    # Never inputs under the image policy: a macOS AppleDouble twin and our own cache folder.
    (images / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (tmp_path / "unlabelled" / ".accvit-cache").mkdir()
    (tmp_path / "unlabelled" / ".accvit-cache" / "x.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "pretrain", "--data-path", str(tmp_path / "unlabelled"), "--model", "accvit_femto", "--weights", "maxvit_t",
        "--teacher", "maxvit_t", "--distill-temperature", "2", "--epochs", "1", "--warmup-epochs", "0",
        "--global-batch-size", "2", "--ra-reps", "1", "--workers", "0", "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "agreement with teacher" in result.stderr
    with open(out / "history.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0.0 <= float(row["val_agreement"]) <= 100.0 and row["ema_val_agreement"] != ""
    assert row["val_top1"] == ""  # no labels, no top-1
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["teacher"] == "maxvit_t" and config["recipe"]["distill_temperature"] == 2.0
    assert config["weights"]["inheritance"]["inherited_from"] == "maxvit_t"
    assert len(config["classes"]) == 1000  # the student learns the teacher's classes
    # The agreement logged is what the saved student and the teacher give on the held-out image.
    from accvit_med.models import create_model
    from accvit_med.training.pretrain.distill import load_distillation_data, load_teacher
    from accvit_med.training.pretrain.recipe import recipe_for

    student = create_model("accvit_femto", num_classes=1000)
    student.load_state_dict(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"])
    teacher = load_teacher("maxvit_t", torch.device("cpu"))
    data = load_distillation_data(tmp_path / "unlabelled", recipe_for("accvit_femto"), "maxvit_t")
    assert len(data.train) + len(data.val) == 5
    held_out = torch.stack([data.val[i][0] for i in range(len(data.val))])
    with torch.no_grad():
        agree = (student.eval()(held_out).argmax(1) == teacher(held_out).argmax(1)).float().mean() * 100
    assert float(row["val_agreement"]) == pytest.approx(float(agree))


def test_teacher_without_imagenet_weights_and_orphan_options_are_one_line_errors(tmp_path):
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path / "x"), "--model", "accvit_femto",
                                      "--teacher", "accvit_tiny"])
    assert result.exit_code == 2 and "--teacher accvit_tiny has no ImageNet weights" in result.stderr
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path / "x"), "--model", "accvit_femto",
                                      "--distill-weight", "0.5"])
    assert result.exit_code == 2 and "need --teacher" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
