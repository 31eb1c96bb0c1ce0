"""``accvit-med evaluate``: recompute predictions and metrics of a run from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from accvit_med.cli.options import BatchSizeOpt, CheckpointOpt, DeviceOpt, RunDataDirOpt, RunOpt, WorkersOpt, shown


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    run: RunOpt,
    checkpoint: CheckpointOpt = "best",
    split: str = typer.Option("test", "--split", help="train, val or test."),
    data_dir: RunDataDirOpt = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder.", show_default="<run>/evaluate/<checkpoint>"),
    device: DeviceOpt = "auto",
    workers: shown(WorkersOpt, "the run's") = None,
    batch_size: shown(BatchSizeOpt, "the run's") = None,
) -> None:
    """Recompute predictions_<split>.csv and metrics_<split>.json from a run's checkpoint."""
    from accvit_med.fileio import check_writable
    from accvit_med.rundir.layout import RunDir
    from accvit_med.training.evaluate_run import evaluate_run

    check_writable(out if out is not None else RunDir(run).evaluate_dir(checkpoint))
    result = evaluate_run(
        run, checkpoint=checkpoint, part=split, device=device, workers=workers, batch_size=batch_size,
        data_dir=None if data_dir is None else str(data_dir), out=out,
    )
    metrics = result.metrics
    typer.echo(
        f"{split} ({checkpoint}.pt, epoch {result.epoch}): accuracy {metrics['accuracy']:.4f}  "
        f"macro precision {metrics['macro_precision']:.4f}  macro recall {metrics['macro_recall']:.4f}  "
        f"macro F1 {metrics['macro_f1']:.4f}"
    )
    typer.echo(f"predictions: {result.predictions}")
    typer.echo(f"metrics: {result.metrics_path}")
