"""``accvit-med models``: every model the toolkit can build, with parameters, GFLOPs and weights."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    image_size: int = typer.Option(224, "--image-size", help="Input side for the GFLOPs column (a multiple of 224)."),
) -> None:
    """List the models (ACC-ViT variants and torchvision baselines): family, parameters, GFLOPs, weights.

    GFLOPs follow the ACC-ViT paper (fvcore conventions, one image). Parameters include a 1000-class
    head. 'ImageNet-1K (cached)' means weights="imagenet" works offline.
    """
    from rich.console import Console
    from rich.table import Table

    from accvit_med.models.acc_vit import check_image_size
    from accvit_med.models.summary import summarize_models

    check_image_size(image_size, image_size)
    table = Table(title=f"accvit-med models ({image_size}x{image_size} input)")
    table.add_column("model")
    table.add_column("family")
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("pretrained weights")
    for row in summarize_models(image_size):
        table.add_row(row.name, row.family, f"{row.params / 1e6:.3f}", f"{row.gflops:.3f}", row.weights)
    Console(width=100).print(table)
