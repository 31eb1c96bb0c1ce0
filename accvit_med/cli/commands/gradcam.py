"""``accvit-med gradcam``: where one or several fine-tuned runs look (Grad-CAM, the paper's Figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from accvit_med.cli.options import BatchSizeOpt, CheckpointOpt, DeviceOpt, RunDataDirOpt


def register(app: typer.Typer) -> None:
    app.command("gradcam")(gradcam)


def gradcam(
    images: Optional[List[Path]] = typer.Argument(None, metavar="IMAGES",
                                                  help="Image files and/or folders (searched recursively)."),
    run: List[Path] = typer.Option(
        ..., "--run", help="Run directory; repeat to compare runs side by side (one grid column each)."),
    misclassified: bool = typer.Option(
        False, "--misclassified", help="Explain the first run's test-set errors (most confident first)."),
    limit: int = typer.Option(16, "--limit", help="At most this many test-set errors with --misclassified."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder.", show_default="<first run>/gradcam"),
    class_name: Optional[str] = typer.Option(None, "--class", help="Explain this class for every image.",
                                             show_default="each run's predicted class"),
    checkpoint: CheckpointOpt = "best",
    data_dir: RunDataDirOpt = None,
    alpha: float = typer.Option(0.5, "--alpha", help="Opacity of the heat map over the image (0-1)."),
    rows_per_grid: int = typer.Option(8, "--rows-per-grid", help="Images per grid figure."),
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = "auto",
) -> None:
    """Grad-CAM overlays of each run on the same images, and a grid with one column per run.

    Examples:

      accvit-med gradcam --run runs/busi/accvit_tiny/seed42 --run runs/busi/swin_t/seed42 \\
          --run runs/busi/maxvit_t/seed42 --misclassified --limit 8

      accvit-med gradcam --run runs/ham10000/accvit_tiny/seed42 lesion1.jpg lesion2.jpg
    """
    from accvit_med.errors import UserError
    from accvit_med.interpret import CamImage, explain_images, load_run, misclassified_images
    from accvit_med.interpret.images import image_roots

    if not images and not misclassified:
        raise UserError("nothing to explain; pass image files or folders, or --misclassified")
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    chosen = [CamImage(path, root=root) for path, root in image_roots(images).items()] if images else []
    runs = [load_run(path, checkpoint=checkpoint, device=device) for path in run]
    if misclassified:
        errors = misclassified_images(runs[0], limit, data_dir)
        if not errors and not chosen:
            typer.echo(f"run '{runs[0].path}' classified every test image correctly; nothing to explain")
            return
        chosen += errors
    from accvit_med.fileio import check_writable
    from accvit_med.rundir.layout import RunDir

    folder = out if out is not None else RunDir(runs[0].path).gradcam_dir

    check_writable(folder)  # before the network runs on every image
    result = explain_images(runs, chosen, folder, class_name=class_name, batch_size=batch_size, alpha=alpha,
                            rows_per_grid=rows_per_grid)
    typer.echo(f"{result.overlays} overlays of {len(chosen)} image(s) by {len(runs)} run(s) in {folder}")
    for grid in result.grids:
        typer.echo(f"grid: {grid}")
    typer.echo(f"index: {result.table}")
