"""``accvit-med evaluate``: recompute predictions and metrics of a run from a checkpoint, or score
the run on an external data set (``--dataset NAME --data-dir DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from accvit_med.cli.options import BatchSizeOpt, CalibrateOpt, CheckpointOpt, DeviceOpt, RunsOpt, WorkersOpt, shown


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    runs: RunsOpt,
    checkpoint: CheckpointOpt = "best",
    split: str = typer.Option("test", "--split", help="train, val or test."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir",
        help="With --dataset: the external data set's folder; else the run's data root, if it moved."),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="Score the run on this external data set (e.g. isic2019) instead of its own split."),
    external_split: Optional[Path] = typer.Option(
        None, "--external-split", help="Score the run on every row of this split file of external data."),
    class_map: Optional[Path] = typer.Option(
        None, "--class-map", help="TOML/JSON file: external class = run class, where names differ."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Name of the external evaluation.", show_default="the data set's name"),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output folder (required for an ensemble).",
        show_default="<run>/evaluate/<checkpoint> or <run>/external/<name>"),
    calibrate: CalibrateOpt = True,
    device: DeviceOpt = "auto",
    workers: shown(WorkersOpt, "the run's") = None,
    batch_size: shown(BatchSizeOpt, "the run's") = None,
) -> None:
    """Recompute predictions_<split>.csv and metrics_<split>.json from a run's checkpoint.

    With --dataset NAME --data-dir DIR (or --external-split FILE): score the run on a data set it
    never trained on, classes matched by name (or --class-map), images the run has seen left out;
    writes <run>/external/<name>/predictions.csv and metrics.json.

    With several --run: each run is evaluated as alone, then their ensemble (the mean of their
    probabilities, temperature-scaled on each run's validation predictions unless --no-calibrate)
    is written to --out: predictions_<split>.csv, metrics.json and ensemble.json, which
    `accvit-med report` takes as one more model, e.g. "accvit_tiny (5-fold ensemble)".
    """
    from accvit_med.errors import UserError
    from accvit_med.fileio import check_writable
    from accvit_med.rundir.layout import RunDir
    from accvit_med.training.evaluate_run import evaluate_run

    if len(runs) > 1:
        _ensemble(runs, checkpoint, split, data_dir, dataset, external_split, class_map, name, out, calibrate,
                  {"device": device, "workers": workers, "batch_size": batch_size})
        return
    run = runs[0]
    if dataset is not None or external_split is not None:
        _external(run, checkpoint, split, data_dir, dataset, external_split, class_map, name, out,
                  device, workers, batch_size)
        return
    if class_map is not None or name is not None:
        raise UserError("--class-map and --name apply to external evaluation; add --dataset NAME --data-dir DIR")

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


def _ensemble(runs, checkpoint, split, data_dir, dataset, external_split, class_map, name, out, calibrate,
              runtime) -> None:
    from accvit_med.errors import UserError
    from accvit_med.fileio import check_writable
    from accvit_med.training.evaluate_ensemble import check_ensemble_out, evaluate_ensemble

    out = check_ensemble_out(out, runs)
    check_writable(out)
    external = None
    if dataset is not None or external_split is not None:
        if split != "test":
            raise UserError("--split picks a part of the runs' own split; an external evaluation uses every image "
                            "of the external data (drop --split)")
        external = {"dataset": dataset, "data_dir": data_dir, "split_file": external_split, "name": name,
                    "class_map": class_map}
    elif class_map is not None or name is not None:
        raise UserError("--class-map and --name apply to external evaluation; add --dataset NAME --data-dir DIR")
    else:
        runtime["data_dir"] = None if data_dir is None else str(data_dir)
    result = evaluate_ensemble(runs, out, checkpoint=checkpoint, part=split, calibrate=calibrate,
                               external=external, **runtime)
    for note in result.notes:
        typer.echo(f"note: {note}")
    m = result.metrics
    how = "calibrated" if m["ensemble"]["calibrated"] else "raw"
    typer.echo(f"{result.label} of {len(runs)} runs ({m['n']} images, {checkpoint}.pt, {how} probabilities): "
               f"accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}")
    typer.echo(f"predictions: {result.predictions}")
    typer.echo(f"metrics: {result.metrics_path}")


def _external(run, checkpoint, split, data_dir, dataset, external_split, class_map, name, out,
              device, workers, batch_size) -> None:
    from accvit_med.errors import UserError
    from accvit_med.fileio import check_writable
    from accvit_med.training.evaluate_external import evaluate_external

    if split != "test":
        raise UserError("--split picks a part of the run's own split; an external evaluation uses every image "
                        "of the external data (drop --split)")
    check_writable(out if out is not None else run)
    result = evaluate_external(
        run, dataset=dataset, data_dir=data_dir, split_file=external_split, name=name, class_map=class_map,
        checkpoint=checkpoint, out=out, device=device, workers=workers, batch_size=batch_size,
    )
    for line in result.lines:
        typer.echo(line)
    m = result.metrics
    typer.echo(
        f"external {m['external']['name']} ({m['n']} images, {checkpoint}.pt): accuracy {m['accuracy']:.4f}  "
        f"macro F1 {m['macro_f1']:.4f}"
    )
    typer.echo(f"predictions: {result.predictions}")
    typer.echo(f"metrics: {result.metrics_path}")
