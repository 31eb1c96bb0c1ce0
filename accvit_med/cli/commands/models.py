"""``accvit-med models``: every model the toolkit can build, with parameters, GFLOPs and weights."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from accvit_med.cli.options import ImageSizeOpt


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    image_size: ImageSizeOpt = 224,
    recount: Annotated[bool, typer.Option(
        "--recount", help="Count parameters and FLOPs now instead of "
                          "reading the package's table (other sizes than 224 are always counted).")] = False,
    zoo: Annotated[Optional[str], typer.Option(
        help="List a library's classifiers instead, as --model takes them: torchvision or timm.")] = None,
    contains: Annotated[str, typer.Option("--filter", help="With --zoo: only names containing this text.")] = "",
) -> None:
    """List the models (ACC-ViT variants and torchvision baselines): family, parameters, GFLOPs, weights.

    GFLOPs follow the ACC-ViT paper (fvcore conventions, one image). Parameters include a 1000-class
    head. At 224 both come from a table counted once (accvit_med/models/model_table.py); --recount
    counts them now. 'ImageNet-1K (cached)' means weights="imagenet" works offline. A second table
    lists the paper's design study (Table 8): ACC-ViT-nano variants that finetune, pretrain and benchmark take too.
    """
    if zoo is not None:  # a name list, no table: timm alone has over a thousand
        from accvit_med.models.zoo import list_zoo

        for name in list_zoo(zoo, contains):
            typer.echo(name)
        return
    from rich.console import Console
    from rich.table import Table

    from accvit_med.models.registry import check_image_size, list_models
    from accvit_med.models.summary import summarize_models

    for name in list_models(design_study=True):
        check_image_size(name, image_size)
    table = Table(title=f"accvit-med models ({image_size}x{image_size} input)")
    study = Table(title="ACC-ViT design study (the paper's Table 8, appendix E; docs/design-study.md)")
    for column in (table, study):
        column.add_column("model")
        column.add_column("family")
        column.add_column("params (M)", justify="right")
        column.add_column("GFLOPs", justify="right")
        column.add_column("pretrained weights")
    for row in summarize_models(image_size, design_study=True, recount=recount):
        (study if row.design_study else table).add_row(
            row.name, row.family, f"{row.params / 1e6:.3f}", f"{row.gflops:.3f}", row.weights)
    console = Console(width=100)
    console.print(table)
    console.print(study)
