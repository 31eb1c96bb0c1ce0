"""A run folder written by an earlier version (tests/data/run_finetune_v1: config.json, history.csv,
metrics.json and the predictions CSVs of a 2-epoch accvit_femto run, checkpoints left out) reads
through RunDir.record() and RunDir.history(), and every reader sees what the files say.

The references are the files themselves, read with json, csv and pandas.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from accvit_med.errors import UserError
from accvit_med.reports.runs import resolve_input
from accvit_med.reports.seeds import run_seed
from accvit_med.rundir.layout import RunDir
from accvit_med.training.recipe import RUNTIME_FIELDS, FinetuneConfig

OLD_RUN = Path(__file__).parent / "data" / "run_finetune_v1"


def _raw() -> dict:
    return json.loads((OLD_RUN / "config.json").read_text(encoding="utf-8"))


def test_the_record_of_an_old_run_holds_what_its_config_json_says():
    raw = _raw()
    record = RunDir(OLD_RUN).record(kind="finetune")
    assert record.task == "finetune"
    assert (record.model, record.dataset, list(record.classes), record.ordinal) == (
        raw["model"], raw["dataset"], raw["classes"], raw["ordinal"])
    assert record.split.to_dict() == raw["split"]
    assert (record.data_root, dict(record.weights), record.device, record.amp_dtype) == (
        raw["data_root"], raw["weights"], raw["device"], raw["amp_dtype"])
    assert (dict(record.versions), list(record.command)) == (raw["versions"], raw["command"])
    # The recipe is typed: every stored key, as the field of the recipe dataclass.
    assert isinstance(record.recipe, FinetuneConfig)
    assert {k: getattr(record.recipe, k) for k in raw["recipe"]} == raw["recipe"]
    # Written back, it is the same file (a resumed run rewrites config.json from its record).
    assert record.to_dict() == raw


def test_the_history_of_an_old_run_is_its_csv():
    rows = RunDir(OLD_RUN).history()
    with open(OLD_RUN / "history.csv", newline="", encoding="utf-8") as handle:
        reference = list(csv.DictReader(handle))
    assert [r.epoch for r in rows] == [int(r["epoch"]) for r in reference]
    for row, ref in zip(rows, reference):
        assert row.values == {k: float(v) for k, v in ref.items() if k != "epoch"}
    assert min(r.val_loss for r in rows) == pd.read_csv(OLD_RUN / "history.csv")["val_loss"].min()


def test_a_recipe_from_before_the_ema_option_reads_with_the_defaults_of_its_time(tmp_path):
    run = tmp_path / "older"
    shutil.copytree(OLD_RUN, run)
    raw = _raw()
    dropped = ("ema_decay", "weight_decay", "randaugment_ops", "randaugment_magnitude")
    raw["recipe"] = {k: v for k, v in raw["recipe"].items() if k not in dropped}
    (run / "config.json").write_text(json.dumps(raw))
    recipe = RunDir(run).record().recipe
    # The values runs were started with before the MaxViT fine-tuning defaults (docs/cli.md).
    assert (recipe.ema_decay, recipe.weight_decay, recipe.randaugment_ops, recipe.randaugment_magnitude) == (
        None, 0.05, 2, 9)
    assert recipe.lr == raw["recipe"]["lr"]


def test_readers_of_the_old_run_see_its_record():
    raw = _raw()
    scored = resolve_input(OLD_RUN)
    assert (scored.model, scored.dataset, list(scored.classes), scored.ordinal) == (
        raw["model"], raw["dataset"], raw["classes"], raw["ordinal"])
    assert len(scored.predictions.labels) == len(pd.read_csv(OLD_RUN / "predictions_test.csv"))
    seed, key = run_seed(str(OLD_RUN))
    assert seed == raw["recipe"]["seed"]
    assert json.loads(key) == {k: v for k, v in raw["recipe"].items() if k not in RUNTIME_FIELDS | {"seed"}}


def test_a_run_loads_its_network_through_the_record(tmp_path):
    import torch

    from accvit_med.interpret import load_run
    from accvit_med.models import create_model

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    raw = _raw()
    model = create_model(raw["model"], num_classes=len(raw["classes"]), weights=None,
                         image_size=raw["recipe"]["image_size"])
    (run / "checkpoints").mkdir()
    torch.save({"model": model.state_dict(), "classes": raw["classes"], "epoch": 2}, run / "checkpoints" / "best.pt")
    loaded = load_run(run, device="cpu")
    assert (loaded.model_name, loaded.classes, loaded.image_size, loaded.epoch) == (
        raw["model"], raw["classes"], raw["recipe"]["image_size"], 2)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    with pytest.raises(UserError, match="has no checkpoint checkpoints/last.pt"):
        load_run(run, checkpoint="last", device="cpu")


def test_a_config_json_without_a_run_in_it_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "swin_t"}))
    with pytest.raises(UserError, match="lacks what a run's config.json holds"):
        RunDir(run).record(kind="finetune")
