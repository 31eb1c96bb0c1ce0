"""ImageNet pre-training pieces checked against their formulas and against torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.errors import UserError
from accvit_med.training.pretrain.ema import ExponentialMovingAverage, adjusted_ema_decay
from accvit_med.training.pretrain.engine import resolve_recipe
from accvit_med.training.pretrain.imagenet import check_layout
from accvit_med.training.pretrain.mixing import MixupCutmix
from accvit_med.training.pretrain.param_groups import no_weight_decay_names, param_groups
from accvit_med.training.pretrain.recipe import RECIPES, batch_layout, recipe_for
from accvit_med.training.pretrain.sampler import RASampler
from accvit_med.training.pretrain.schedule import lr_at

# ---------------------------------------------------------------- learning-rate schedule

@pytest.mark.parametrize("epochs,warmup,base,floor", [(400, 32, 1e-3, 1e-5), (20, 5, 5e-4, 5e-6), (7, 0, 1e-3, 0.0)])
def test_schedule_matches_torchvision_chain_at_whole_epochs(epochs, warmup, base, floor):
    """torchvision's reference: SequentialLR(LinearLR(0.01, W), CosineAnnealingLR(E - W, eta_min)), per epoch."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup, eta_min=floor)
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
    else:
        scheduler = cosine
    for epoch in range(epochs):
        expected = optimizer.param_groups[0]["lr"]
        got = lr_at(epoch, base_lr=base, min_lr=floor, epochs=epochs, warmup_epochs=warmup, warmup_decay=0.01)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-15), epoch
        optimizer.step()
        scheduler.step()


def test_schedule_between_epochs_follows_the_formula():
    kwargs = dict(base_lr=1e-3, min_lr=1e-5, epochs=400, warmup_epochs=32, warmup_decay=0.01)
    # Half-way through warm-up: half-way between 1e-5 and 1e-3.
    assert lr_at(16.0, **kwargs) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert lr_at(0.25, **kwargs) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.25 / 32))
    # Half-way through the cosine: the mean of peak and floor; the end: the floor.
    assert lr_at(32 + 184, **kwargs) == pytest.approx((1e-3 + 1e-5) / 2)
    assert lr_at(400, **kwargs) == pytest.approx(1e-5)
    epoch = 123.4
    cosine = (1 + math.cos(math.pi * (epoch - 32) / 368)) / 2
    assert lr_at(epoch, **kwargs) == pytest.approx(1e-5 + (1e-3 - 1e-5) * cosine)
    values = [lr_at(e / 10, **kwargs) for e in range(0, 4001)]
    peak = values.index(max(values))
    assert peak == 320  # the peak is at the end of warm-up
    assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1]))
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :]))


# ---------------------------------------------------------------- mixup / cutmix

def _distinct_batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    # Constant images with a different value per sample: every pasted pixel is detectable.
    images = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    labels = torch.tensor([0, 1, 2, 3, 0, 2])[:n]
    return images, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_blends_images_and_labels_with_the_same_weight(seed):
    # Mixing is torchvision's v2.MixUp; checked here against the formula, pixel by pixel.
    torch.manual_seed(seed)
    images, labels = _distinct_batch()
    targets = nn.functional.one_hot(labels, 4).float()
    mixed, soft = MixupCutmix(num_classes=4, mixup_alpha=0.8, cutmix_alpha=0.0)(images, labels)
    lam = float(mixed[1, 0, 0, 0]) - 1.0  # image 1 (value 2) blended with image 0 (value 1): 1 + lam
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.roll(1, 0), atol=1e-5)
    assert torch.allclose(soft, lam * targets + (1 - lam) * targets.roll(1, 0), atol=1e-5)
    assert torch.allclose(soft.sum(1), torch.ones(len(labels)))


@pytest.mark.parametrize("seed", [5, 30, 50, 77, 99])
def test_cutmix_label_weight_equals_the_pasted_area(seed):
    # torchvision's v2.CutMix: the label weights must match the pixels actually pasted (box clipped).
    torch.manual_seed(seed)
    images, labels = _distinct_batch()
    mixed, soft = MixupCutmix(num_classes=4, mixup_alpha=0.0, cutmix_alpha=0.8)(images, labels)
    assert torch.allclose(soft.sum(1), torch.ones(len(labels)))
    neighbour = images.roll(1, 0)
    for i in range(len(labels)):
        pasted = (mixed[i] == neighbour[i]).all(0).float().mean()  # share of pixels from the neighbour
        kept = (mixed[i] == images[i]).all(0).float().mean()
        assert float(pasted + kept) == pytest.approx(1.0)
        own = torch.zeros(4)
        own[labels[i]] += float(kept)
        own[labels[(i - 1) % len(labels)]] += float(pasted)
        assert torch.allclose(soft[i], own, atol=1e-6)


def test_mixup_cutmix_picks_both_and_soft_labels_sum_to_one():
    torch.manual_seed(0)
    images, labels = _distinct_batch()
    mixer = MixupCutmix(num_classes=4, mixup_alpha=0.8, cutmix_alpha=0.8)
    kinds = set()
    for _ in range(40):
        mixed, soft = mixer(images, labels)
        assert torch.allclose(soft.sum(1), torch.ones(len(labels)))
        # Mixup gives values strictly between neighbours; cutmix only values taken from the batch.
        kinds.add("cutmix" if set(mixed.unique().tolist()) <= set(images.unique().tolist()) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    plain = MixupCutmix(num_classes=4, mixup_alpha=0.0, cutmix_alpha=0.0)
    same, onehot = plain(images, labels)
    assert torch.equal(same, images) and torch.equal(onehot.argmax(1), labels)


def test_label_smoothing_on_mixed_targets_is_torch_cross_entropy():
    # The loss smooths the mixed target: (1 - eps) * soft + eps / C, as CrossEntropyLoss documents.
    torch.manual_seed(1)
    logits = torch.randn(5, 4)
    soft = torch.softmax(torch.randn(5, 4), 1)
    expected = -(((1 - 0.1) * soft + 0.1 / 4) * torch.log_softmax(logits, 1)).sum(1).mean()
    assert nn.CrossEntropyLoss(label_smoothing=0.1)(logits, soft) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------- EMA

def test_ema_update_follows_its_formula_for_parameters_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = ExponentialMovingAverage(model, decay=0.9)
    ema.update_parameters(model)  # the first update copies
    first = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(ema.weights()[k], v) for k, v in first.items())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    model(torch.randn(8, 4))  # moves the BatchNorm running statistics
    ema.update_parameters(model)
    current = model.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        assert torch.allclose(ema.weights()[key], 0.9 * first[key] + 0.1 * current[key]), key
    ema.restart()  # warm-up: the next update copies again
    ema.update_parameters(model)
    assert torch.equal(ema.weights()["0.weight"], current["0.weight"])


def test_ema_decay_adjustment_is_torchvisions():
    # train.py: adjust = world_size * batch_size * model_ema_steps / epochs; alpha = min(1, (1 - decay) * adjust)
    femto = adjusted_ema_decay(0.99998, 16 * 192, 32, 400)
    assert femto == pytest.approx(1 - 0.00002 * 16 * 192 * 32 / 400)
    assert adjusted_ema_decay(0.99998, 10**9, 32, 1) == 0.0  # alpha is capped at 1


# ---------------------------------------------------------------- repeated-augmentation sampler

def test_ra_sampler_sends_each_repeat_to_another_process():
    samplers = [RASampler(10, num_replicas=3, rank=r, reps=3, seed=5) for r in range(3)]
    for s in samplers:
        s.set_epoch(2)
    shares = [list(s) for s in samplers]
    assert [len(s) for s in samplers] == [4, 4, 4] == [len(x) for x in shares]
    # 3 repeats over 3 processes: every process sees the same images in the same order (augmented differently).
    assert shares[0] == shares[1] == shares[2]
    assert len(set(shares[0])) == 4
    again = RASampler(10, num_replicas=3, rank=0, reps=3, seed=5)
    again.set_epoch(2)
    assert list(again) == shares[0]
    again.set_epoch(3)
    assert list(again) != shares[0]


def test_ra_sampler_two_processes_cover_every_repeat():
    full = []
    for rank in range(2):
        sampler = RASampler(7, num_replicas=2, rank=rank, reps=3, seed=0)
        sampler.num_selected = sampler.num_samples  # look at the whole repeated list, not one pass
        full += list(sampler)
    counts = torch.bincount(torch.tensor(full), minlength=7)
    assert counts.sum() == 22 and counts.min() >= 3  # 7 x 3 = 21, padded by one to split evenly


# ---------------------------------------------------------------- weight decay

@pytest.mark.parametrize("name", ["accvit_femto", "swin_t", "maxvit_t"])
def test_no_weight_decay_on_norms_biases_and_position_tables(name):
    from accvit_med.models import create_model

    model = create_model(name, num_classes=5)
    excluded = set(no_weight_decay_names(model))
    # Independent description: every 1-D parameter (norm scales and shifts, biases) plus the tables.
    expected = {n for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}
    assert excluded == expected
    assert any(n.endswith("relative_position_bias_table") for n in excluded)
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    named = {id(p): n for n, p in model.named_parameters()}
    assert {named[id(p)] for p in groups["no_decay"]["params"]} == excluded
    assert len(groups["decay"]["params"]) + len(excluded) == len(list(model.parameters()))


# ---------------------------------------------------------------- recipe and batch layout

def test_table4_global_batches_give_the_papers_per_gpu_batches_on_16_gpus():
    # Appendix C.1 runs --batch-size 192/160/128/64 per GPU on 16 GPUs; Table 4 lists the global batches.
    per_gpu = {"accvit_femto": 192, "accvit_pico": 160, "accvit_nano": 128, "accvit_tiny": 64}
    for model, batch in per_gpu.items():
        layout = batch_layout(RECIPES[model].global_batch_size, 16)
        assert (layout.per_process, layout.accumulation_steps) == (batch, 1)


def test_fewer_gpus_accumulate_to_the_global_batch():
    layout = batch_layout(1024, world_size=2, per_process=64)
    assert layout.accumulation_steps == 8 and layout.per_process * layout.world_size * 8 == 1024
    assert batch_layout(1024, world_size=8).per_process == 128
    with pytest.raises(UserError, match="--batch-size"):
        batch_layout(1024, world_size=2, per_process=48)
    with pytest.raises(UserError, match="multiple of 3"):
        batch_layout(1024, world_size=3)


def test_recipe_overrides_and_resume_rules():
    assert recipe_for("accvit_small").lr == 5e-4 and recipe_for("accvit_small").min_lr == 5e-6
    assert recipe_for("accvit_tiny", lr=2e-3, epochs=None).lr == 2e-3
    with pytest.raises(UserError, match="no pre-training recipe"):
        recipe_for("resnet50")
    with pytest.raises(UserError, match="warmup"):
        recipe_for("accvit_tiny", epochs=10)  # 32 warm-up epochs do not fit in 10
    stored = recipe_for("accvit_nano", epochs=50).to_dict()
    assert resolve_recipe("accvit_nano", {"epochs": 50, "lr": None}, stored).epochs == 50
    with pytest.raises(UserError, match="--epochs 60"):
        resolve_recipe("accvit_nano", {"epochs": 60}, stored)


# ---------------------------------------------------------------- ImageNet folder checks

def _folder(root, split, classes):
    for name in classes:
        (root / split / name).mkdir(parents=True, exist_ok=True)


def test_layout_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="train is missing"):
        check_layout(tmp_path)
    _folder(tmp_path, "train", ["n01", "n02", "n03"])
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match="valprep"):
        check_layout(tmp_path)  # ImageNet's flat val/ needs sorting into class folders
    _folder(tmp_path, "val", ["n01", "n02", "n04"])
    with pytest.raises(UserError, match=r"only in train/: n03; only in val/: n04"):
        check_layout(tmp_path)


def test_cli_bad_data_path_is_one_line_and_writes_nothing(tmp_path):
    _folder(tmp_path / "data", "train", ["a", "b"])
    _folder(tmp_path / "data", "val", ["a"])
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path / "data"), "--model", "accvit_femto",
                                      "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("accvit-med: error: class folders differ") and result.stderr.count("\n") == 1
    assert not out.exists()
    empty = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path / "data"), "--eval-only"])
    assert empty.exit_code == 2 and "--weights" in empty.stderr


def test_ctrl_c_leaves_a_resumable_run(tmp_path, monkeypatch):
    from PIL import Image

    from accvit_med.training.pretrain import engine

    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "data" / split / name / "0.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_epoch", interrupted)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path / "data"), "--model", "accvit_femto",
                                      "--out", str(out), "--workers", "0", "--global-batch-size", "2"])
    assert result.exit_code == 130
    assert "interrupted during epoch 1" in result.stderr and "--resume" in result.stderr
    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and state["history"] == []
    assert (out / "history.csv").read_text().startswith("epoch,lr,train_loss")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # nothing half-written
