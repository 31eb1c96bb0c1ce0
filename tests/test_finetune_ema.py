"""--ema (MaxViT's weight EMA) and the recipe a run is resumed with.

The EMA is checked against the average computed by hand in numpy; a run with --ema validates,
keeps and evaluates the averaged weights, and resumes to the bit; a run started under the old
defaults (weight decay 0.05, RandAugment magnitude 9, no EMA) resumes with them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from accvit_med.datasets.create_split import create_split
from accvit_med.datasets.synthetic import make_image_folder
from accvit_med.rundir.checkpoints import load_checkpoint, save_checkpoint
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.ema import make_ema
from accvit_med.training.finetune import finetune, resumed_config
from accvit_med.training.part_predictions import evaluate_part
from accvit_med.training.recipe import FinetuneConfig, stored_recipe
from accvit_med.training.run_split import load_run_split


def tiny(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


@pytest.fixture(scope="module")
def split_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    make_image_folder(root / "images", classes=("a", "b"), per_class=10, size=(36, 36), seed=3)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    return root / "split.csv"


def _config(split_csv, **changes) -> FinetuneConfig:
    values = dict(split=str(split_csv), model="tiny", weights="none", epochs=2, batch_size=4, lr=3e-3,
                  image_size=32, workers=0, seed=11, ema_decay=0.6)
    values.update(changes)
    return FinetuneConfig(**values)


def _run(config, out, resume=False):
    return finetune(config, out=str(out), resume=resume, model_factory=tiny,
                    console=Console(file=open("/dev/null", "w")))


def test_ema_is_the_hand_computed_average_of_weights_and_bn_statistics():
    torch.manual_seed(0)
    model = tiny(3)
    decay = 0.7
    ema = make_ema(model, decay)
    expected = {k: v.detach().double().numpy().copy() for k, v in model.state_dict().items() if v.is_floating_point()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(4):
        loss = nn.functional.cross_entropy(model(torch.randn(6, 3, 16, 16)), torch.randint(0, 3, (6,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # the forward pass above also moved BatchNorm's running statistics
        ema.update_parameters(model)
        for k, v in model.state_dict().items():
            if k in expected:
                expected[k] = decay * expected[k] + (1 - decay) * v.detach().double().numpy()
    averaged = ema.module.state_dict()
    assert set(averaged) == set(model.state_dict())  # loads like the model's own state dict
    for k, want in expected.items():
        np.testing.assert_allclose(averaged[k].double().numpy(), want, rtol=1e-5, atol=1e-6, err_msg=k)
    assert not torch.equal(averaged["0.weight"], model.state_dict()["0.weight"])


def test_best_checkpoint_holds_the_ema_weights_that_were_validated(split_csv, tmp_path):
    config = _config(split_csv)
    result = _run(config, tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    model = tiny(2)
    model.load_state_dict(best["model"])  # a plain state dict, no "module." prefix
    # The validation loss recorded for the best epoch is that of best.pt's weights ...
    data = rundata.build_run_data(load_run_split(config), config)
    console = Console(file=open("/dev/null", "w"))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def val_loss(state):
        model.load_state_dict(state)
        context = RunContext(torch.device("cpu"), console=console)
        return evaluate_part(model, data.val, config, context, criterion, "v").loss

    recorded = result.history[result.best_epoch - 1]["val_loss"]
    assert val_loss(best["model"]) == pytest.approx(recorded, rel=1e-6)
    # ... and the final epoch's recorded loss is the EMA's, not the raw weights'.
    ema_state = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert val_loss(ema_state) == pytest.approx(result.history[-1]["val_loss"], rel=1e-6)
    assert val_loss(last["model"]) != pytest.approx(result.history[-1]["val_loss"], rel=1e-6)
    recipe = json.loads((tmp_path / "run" / "config.json").read_text())["recipe"]
    assert recipe["ema_decay"] == 0.6


def test_resume_with_ema_is_exact(split_csv, tmp_path):
    straight = _run(_config(split_csv, epochs=3), tmp_path / "straight")
    _run(_config(split_csv, epochs=2), tmp_path / "resumed")
    resumed = _run(_config(split_csv, epochs=3), tmp_path / "resumed", resume=True)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    columns = ("train_loss", "val_loss", "val_acc")
    assert [[r[c] for c in columns] for r in straight.history] == [[r[c] for c in columns] for r in resumed.history]
    assert straight.metrics["accuracy"] == resumed.metrics["accuracy"]


def test_a_run_started_under_the_old_defaults_resumes_with_them(split_csv, tmp_path):
    # A stored recipe from before --ema: the old defaults apply to whatever it lacks.
    old = {k: v for k, v in FinetuneConfig().to_dict().items()
           if k not in ("ema_decay", "weight_decay", "randaugment_magnitude")}
    merged = stored_recipe(old)
    assert (merged.weight_decay, merged.randaugment_ops, merged.randaugment_magnitude, merged.ema_decay) == (
        0.05, 2, 9, None)
    # End to end: an old run (its config.json and last.pt without those keys) resumes with them.
    out = tmp_path / "old"
    _run(_config(split_csv, epochs=1, ema_decay=None, weight_decay=0.05, randaugment_magnitude=9), out)
    last_path = out / "checkpoints" / "last.pt"
    last = load_checkpoint(last_path)
    for key in ("ema_decay", "weight_decay", "randaugment_magnitude"):
        del last["config"][key]
    save_checkpoint(last_path, last)
    config_json = json.loads((out / "config.json").read_text())
    config_json["recipe"] = {k: v for k, v in config_json["recipe"].items()
                             if k not in ("ema_decay", "weight_decay", "randaugment_magnitude")}
    (out / "config.json").write_text(json.dumps(config_json))
    _run(resumed_config(out, epochs=2, workers=0), out, resume=True)
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert (recipe["weight_decay"], recipe["randaugment_magnitude"], recipe["ema_decay"]) == (0.05, 9, None)
    assert load_checkpoint(last_path)["epoch"] == 2


def test_ema_outside_zero_one_is_refused_in_one_line(split_csv, tmp_path):
    from typer.testing import CliRunner

    from accvit_med.cli import app

    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["finetune", "--split", str(split_csv), "--ema", "1.5", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "accvit-med: error: --ema must be between 0 and 1 (e.g. 0.9999), got 1.5"]
    assert not out.exists()
