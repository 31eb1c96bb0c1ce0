"""``accvit-med demo``: the whole pipeline (split -> finetune -> report) on a synthetic HAM10000."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

# --quick: the smallest demo that still runs every stage (the test suite runs it).
QUICK = {"per_class": 5, "images_per_lesion": 2, "epochs": 1, "n_boot": 200}


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("accvit-demo"), "--out", "-o", help="Folder for the data, split, runs and report."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier demo in --out (never a non-demo folder)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer images, one epoch: checks the set-up in a minute or two."),
    model: Optional[List[str]] = typer.Option(
        None, "--model", help="Model to train; repeat for several. (default: accvit_femto and convnext_tiny)"
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per model. (default: 10; --quick: 1)"),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Images per class. (default: 30; --quick: 5)"),
    seed: int = typer.Option(42, "--seed", help="Seed of the synthetic data, the split and training."),
) -> None:
    """Run the whole pipeline on a small synthetic HAM10000 made on the spot (no download needed).

    Writes 600x450 JPEGs in the HAM10000 layout, splits them by lesion, fine-tunes a small ACC-ViT
    (accvit_femto) and a baseline (convnext_tiny) FROM SCRATCH with a short recipe, and writes the
    report: about 10 minutes on a 2-core CPU. A smoke demonstration, not the paper's protocol.
    """
    from accvit_med.demo import DEFAULT_MODELS, run_demo

    settings: dict = dict(QUICK) if quick else {}
    if epochs is not None:
        settings["epochs"] = epochs
    if per_class is not None:
        settings["per_class"] = per_class
    result = run_demo(out, models=model or DEFAULT_MODELS, seed=seed, force=force, **settings)
    for line in result.summary_lines():
        typer.echo(line)
