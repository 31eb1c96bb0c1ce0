"""Recompute predictions and metrics of a finished (or interrupted) run from one of its checkpoints.

``evaluate_run(run_dir)`` reads the run's record (config.json) for the recipe, model and split, checks that
the split is still the one the run was trained on and that the checkpoint's classes match it, and
writes ``<run>/evaluate/<checkpoint>/predictions_<split>.csv`` and ``metrics_<split>.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from rich.console import Console
from torch import nn

from accvit_med.datasets.dicom import check_run_window
from accvit_med.datasets.splits import Split
from accvit_med.datasets.transforms import Normalisation
from accvit_med.devices import resolve_device
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json
from accvit_med.rundir.checkpoints import check_classes, load_run_model
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.data import finetune_criterion
from accvit_med.training.part_predictions import evaluate_part, write_part_files

PARTS = ("train", "val", "test")


@dataclass
class EvaluationResult:
    metrics: dict
    predictions: Path
    metrics_path: Path
    epoch: int


def _run_split(record: RunRecord, data_dir: Optional[str]) -> Split:
    """The split file the run trained on, with ``data_dir`` as its root if given."""
    from accvit_med.datasets.splits import read_split

    path = record.split.existing()
    if path is None:
        raise UserError(f"the run's split '{record.split.absolute_path}' no longer exists; "
                        "restore it to evaluate this run")
    return read_split(path, root=data_dir)


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    checkpoint: str = "best",
    part: str = "test",
    out: Optional[str | os.PathLike] = None,
    model_factory: Optional[Callable[[int], nn.Module]] = None,
    console: Optional[Console] = None,
    **runtime: Any,
) -> EvaluationResult:
    """Score ``part`` of a run's split with checkpoints/<checkpoint>.pt into ``out`` (default
    <run>/evaluate/<checkpoint>/). ``runtime``: ``device``, ``workers``, ``batch_size``, ``data_dir``
    replace the run's when given (None keeps the run's)."""
    console = console or Console(stderr=True)
    run = RunDir(Path(run_dir))
    run.checkpoint(checkpoint)
    if part not in PARTS:
        raise UserError(f"--split must be one of {', '.join(PARTS)}, got '{part}'")
    unknown = sorted(set(runtime) - {"device", "workers", "batch_size", "data_dir"})
    if unknown:
        raise TypeError(f"evaluate_run() got unexpected keyword arguments {unknown}")
    record = run.record(kind="finetune")
    check_run_window(record.dicom_window, run.path)
    config = replace(record.recipe, **{"device": "auto", **{k: v for k, v in runtime.items() if v is not None}})
    config = config.validate()

    split = _run_split(record, config.data_dir)
    check_classes(list(record.classes), split.classes, f"checkpoint '{checkpoint}.pt' of '{run.path}'")
    if split.sha256 != record.split.sha256:
        raise UserError(f"split '{split.csv_path}' changed since the run was trained (sha256 differs); "
                        "restore the original split file")
    model, state = load_run_model(run, record, checkpoint, model_factory)
    target = resolve_device(config.device)
    model.to(target)

    classes = list(split.classes)
    normalisation = Normalisation.of_weights(record.weights)
    data = rundata.build_run_data(split, config, for_training=False, normalisation=normalisation)
    rundata.check_images(data, parts=[part])  # the image policy, as at training, before any inference
    # The validation criterion of training, so "loss" here is the number history.csv shows.
    criterion = finetune_criterion(config, data.train, len(classes))
    # Same autocast as the run used, so a CUDA run's predictions are reproduced as written.
    amp_dtype = getattr(torch, record.amp_dtype) if target.type == "cuda" and record.amp_dtype else None
    ctx = RunContext(target, console=console, amp_dtype=amp_dtype, channels_last=config.channels_last)
    output = evaluate_part(model, data.part(part), config, ctx, criterion, f"evaluate {part}")

    folder = Path(out) if out else run.evaluate_dir(checkpoint)
    predictions = folder / f"predictions_{part}.csv"
    metrics = write_part_files(output, classes, split.ordinal, predictions)
    metrics["evaluated"] = {"split": part, "checkpoint": checkpoint, "epoch": int(state["epoch"]), "loss": output.loss}
    metrics_path = folder / f"metrics_{part}.json"
    atomic_write_json(metrics_path, metrics)
    return EvaluationResult(metrics, predictions, metrics_path, int(state["epoch"]))
