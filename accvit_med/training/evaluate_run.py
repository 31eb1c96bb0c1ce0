"""Recompute predictions and metrics of a finished (or interrupted) run from one of its checkpoints.

``evaluate_run(run_dir)`` reads the run's config.json for the recipe, model and split, checks that
the split is still the one the run was trained on and that the checkpoint's classes match it, and
writes ``<run>/evaluate/<checkpoint>/predictions_<split>.csv`` and ``metrics_<split>.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from rich.console import Console
from torch import nn

from accvit_med.devices import resolve_device
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json
from accvit_med.rundir.checkpoints import check_classes, load_checkpoint
from accvit_med.rundir.layout import RunDir, read_run_config
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.part_predictions import evaluate_part, write_part_files
from accvit_med.training.recipe import FinetuneConfig

CHECKPOINTS = ("best", "last")
PARTS = ("train", "val", "test")


@dataclass
class EvaluationResult:
    metrics: dict
    predictions: Path
    metrics_path: Path
    epoch: int


def _run_split(run_config: dict, data_dir: Optional[str]):
    from accvit_med.datasets.splits import read_split

    recorded = run_config["split"]
    # The path as given works when evaluating from the same folder; the absolute one from anywhere.
    candidates = [Path(recorded["path"]), Path(recorded["absolute_path"])]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise UserError(f"the run's split '{recorded['absolute_path']}' no longer exists; restore it to evaluate this run")
    return read_split(path, root=data_dir)


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str = "best",
    part: str = "test",
    device: str = "auto",
    workers: Optional[int] = None,
    batch_size: Optional[int] = None,
    data_dir: Optional[str] = None,
    out: Optional[str | os.PathLike] = None,
    model_factory: Optional[Callable[[int], nn.Module]] = None,
    console: Optional[Console] = None,
) -> EvaluationResult:
    console = console or Console(stderr=True)
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"--checkpoint must be best or last, got '{checkpoint}'")
    if part not in PARTS:
        raise UserError(f"--split must be one of {', '.join(PARTS)}, got '{part}'")
    run = RunDir(Path(run_dir))
    run_config = read_run_config(run.path, kind="finetune")
    names = {f.name for f in fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in run_config["recipe"].items() if k in names})
    runtime = {"device": device, "workers": workers, "batch_size": batch_size, "data_dir": data_dir}
    config = replace(config, **{k: v for k, v in runtime.items() if v is not None}).validate()

    state = load_checkpoint(run.best if checkpoint == "best" else run.last)
    split = _run_split(run_config, config.data_dir)
    check_classes(state["classes"], split.classes, f"checkpoint '{checkpoint}.pt' of '{run.path}'")
    if split.sha256 != run_config["split"]["sha256"]:
        raise UserError(f"split '{split.csv_path}' changed since the run was trained (sha256 differs); restore the original split file")

    classes = list(split.classes)
    if model_factory is not None:
        model = model_factory(len(classes))
    else:
        from accvit_med.models import create_model

        model = create_model(config.model, num_classes=len(classes), weights=None, image_size=config.image_size)
    model.load_state_dict(state["model"])
    target = resolve_device(config.device)
    model.to(target)

    data = rundata.build_run_data(split, config, for_training=False)
    rundata.check_images(data, parts=[part])  # the image policy, as at training, before any inference
    # The validation criterion of training, so "loss" here is the number history.csv shows.
    weight = rundata.inverse_frequency_weights(data.train, len(classes)) if config.balance == "weights" else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    # Same autocast as the run used, so a CUDA run's predictions are reproduced as written.
    amp_dtype = getattr(torch, run_config["amp_dtype"]) if target.type == "cuda" and run_config.get("amp_dtype") else None
    ctx = RunContext(target, console=console, amp_dtype=amp_dtype, channels_last=config.channels_last)
    output = evaluate_part(model, data.part(part), config, ctx, criterion, f"evaluate {part}")

    folder = Path(out) if out else run.path / "evaluate" / checkpoint
    predictions = folder / f"predictions_{part}.csv"
    metrics = write_part_files(output, classes, split.ordinal, predictions)
    metrics["evaluated"] = {"split": part, "checkpoint": checkpoint, "epoch": int(state["epoch"]), "loss": output.loss}
    metrics_path = folder / f"metrics_{part}.json"
    atomic_write_json(metrics_path, metrics)
    return EvaluationResult(metrics, predictions, metrics_path, int(state["epoch"]))
