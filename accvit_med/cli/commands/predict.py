"""``accvit-med predict``: class probabilities of a fine-tuned run on new images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from accvit_med.cli.options import BatchSizeOpt, CalibrateOpt, CheckpointOpt, DeviceOpt, WorkersOpt, shown

TABLE_ROWS_WITH_OUT = 20  # with --out the file holds everything; the terminal shows a preview


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    inputs: Annotated[List[Path], typer.Argument(
        metavar="IMAGES_OR_FOLDERS", help="Image files and/or folders (searched recursively).")],
    runs: Optional[List[Path]] = typer.Option(
        None, "--run", help="Run directory written by `accvit-med finetune`; repeat it for the runs' ensemble."),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx",
        help="Model exported by `accvit-med export` (ONNX Runtime, CPU; no PyTorch); instead of --run."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="CSV to write (path,pred,prob_<class>...); without it, only the table is printed."),
    checkpoint: CheckpointOpt = "best",
    tta: str = typer.Option(
        "none", "--tta",
        help="Test-time augmentation: none, h (+ horizontal flip) or hv (+ horizontal and vertical flips)."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out unreadable images (listed on stderr) instead of stopping."),
    batch_size: BatchSizeOpt = 32,
    workers: shown(WorkersOpt, "min(4, CPUs)") = None,
    device: DeviceOpt = "auto",
    calibrate: CalibrateOpt = True,
) -> None:
    """Predict the class of each image with a fine-tuned run (its own preprocessing and checkpoint).

    Examples:

      accvit-med predict --run runs/busi/accvit_tiny/seed42 scans/ --out predictions.csv

      accvit-med predict --run runs/ham10000/swin_t/seed42 lesion.jpg --tta h

      accvit-med predict --onnx export/accvit_tiny.onnx scans/

    With several --run, the mean of the runs' probabilities (each temperature-scaled on its
    validation predictions unless --no-calibrate; --tta applied to each run):

      accvit-med predict --run runs/busi/accvit_tiny/fold1-seed42 --run runs/busi/accvit_tiny/fold2-seed42 scans/
    """
    # Only torch-free modules here: with --onnx, torch is never imported.
    from accvit_med.errors import UserError
    from accvit_med.interpret.images import check_readable, image_roots
    from accvit_med.interpret.results import check_tta, default_workers

    if (not runs) == (onnx is None):
        raise UserError("pass either --run RUN (PyTorch) or --onnx FILE.onnx (ONNX Runtime)")
    members = None
    if runs and len(runs) > 1:
        from accvit_med.training.ensemble import load_members

        members = load_members(runs, same_split=False)  # before any image is read
    check_tta(tta)  # checked here too, before the model is loaded
    if out is not None:  # before any inference: an unwritable --out would waste all of it
        from accvit_med.fileio import check_writable

        if out.is_dir():
            raise UserError(f"--out '{out}' is a folder; pass a CSV file name, e.g. {out / 'predictions.csv'}")
        check_writable(out.parent)
    roots = image_roots(inputs)  # each image's folder: the symlink rule's data root
    paths = list(roots)
    if onnx is not None:
        from accvit_med.deploy.runtime import load_onnx

        loaded = load_onnx(onnx)
        title = f"{loaded.label} (ONNX, epoch {loaded.sidecar.epoch}, TTA {tta})"
    elif members is None:
        from accvit_med.interpret.run import load_run

        loaded = load_run(runs[0], checkpoint=checkpoint, device=device)
        title = f"{loaded.label} ({checkpoint}.pt, epoch {loaded.epoch}, TTA {tta})"
    paths, problems = check_readable(paths, skip_bad=skip_bad, roots=roots)
    for path, reason in problems:
        typer.echo(f"skipped unreadable image '{path}' ({reason})", err=True)
    if not paths:
        raise UserError("every image given is unreadable; nothing to predict")
    workers = default_workers() if workers is None else workers
    if members is not None:
        from accvit_med.interpret.predict import predict_ensemble

        result, title, notes = predict_ensemble(members, paths, checkpoint=checkpoint, device=device, tta=tta,
                                                batch_size=batch_size, workers=workers, calibrate=calibrate)
        for note in notes:
            typer.echo(f"note: {note}", err=True)
    elif onnx is not None:
        result = loaded.predict(paths, tta=tta, batch_size=batch_size, workers=workers)
    else:
        from accvit_med.interpret.predict import predict_images

        result = predict_images(loaded, paths, tta=tta, batch_size=batch_size, workers=workers)
    if out is not None:
        result.write_csv(out)
    _print_table(result, title, out)


def _print_table(result, title: str, out: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = len(result.paths) if out is None else min(len(result.paths), TABLE_ROWS_WITH_OUT)
    table = Table(title=title)
    table.add_column("image", overflow="fold")
    table.add_column("pred")
    for name in result.classes:
        table.add_column(name, justify="right")
    for path, pred, row in zip(result.paths[:shown], result.predicted, result.probabilities):
        table.add_row(path, pred, *(f"{p:.3f}" for p in row))
    console = Console()
    console.print(table)
    if shown < len(result.paths):
        console.print(f"... {len(result.paths) - shown} more rows in {out}")
    if out is not None:
        console.print(f"predictions: {out}", markup=False, highlight=False)
