"""``accvit-med export``: a fine-tuned run as a file other runtimes load (ONNX, verified)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from accvit_med.cli.options import CheckpointOpt, RunDataDirOpt, RunOpt


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run: RunOpt,
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (its sidecar goes beside it as .json).",
                                       show_default="<run>/export/<model>.onnx"),
    checkpoint: CheckpointOpt = "best",
    opset: int = typer.Option(18, "--opset", help="ONNX opset (at least 17)."),
    verify_images: int = typer.Option(16, "--verify-images", help="Test-split images the export is verified on."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest |probability difference| accepted."),
    data_dir: RunDataDirOpt = None,
) -> None:
    """Export a run's network to ONNX, verified with ONNX Runtime on its test images before it is kept.

    Examples:

      accvit-med export --run runs/busi/accvit_tiny/seed42 --format onnx

      accvit-med predict --onnx runs/busi/accvit_tiny/seed42/export/accvit_tiny.onnx scans/
    """
    from accvit_med.errors import UserError

    if fmt != "onnx":
        raise UserError(f"--format must be onnx, got '{fmt}'")
    from accvit_med.deploy.export import export_onnx

    result = export_onnx(run, out, checkpoint=checkpoint, opset=opset, verify_images=verify_images,
                         tolerance=tolerance, data_dir=data_dir)
    typer.echo(f"verified on {result.images} test images: max |probability difference| "
               f"{result.max_difference:.3g} (tolerance {result.tolerance:g})")
    typer.echo(f"onnx: {result.onnx} (opset {result.opset}, dynamic batch)")
    typer.echo(f"sidecar: {result.sidecar}")
