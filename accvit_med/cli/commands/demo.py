"""``accvit-med demo``: the whole pipeline (split -> finetune -> report) on a synthetic HAM10000."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import List, Optional

import typer

from accvit_med.demo import DEFAULT_MODELS, DEFAULT_OUT, run_demo

# --quick: the smallest demo that still runs every stage (the test suite runs it).
QUICK = {"per_class": 5, "images_per_lesion": 2, "epochs": 1, "n_boot": 200}


# The defaults --help shows are run_demo's own (QUICK's with --quick).
_DEMO_DEFAULTS = {name: p.default for name, p in inspect.signature(run_demo).parameters.items()}


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path(DEFAULT_OUT), "--out", "-o", help="Folder for the data, split, runs and report."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier demo in --out (never a non-demo folder)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer images, one epoch: checks the set-up in a minute or two."),
    model: Optional[List[str]] = typer.Option(
        None, "--model", help="Model to train; repeat for several.", show_default=" and ".join(DEFAULT_MODELS)
    ),
    epochs: Optional[int] = typer.Option(
        None, "--epochs", help="Epochs per model.",
        show_default=f"{_DEMO_DEFAULTS['epochs']}; --quick: {QUICK['epochs']}",
    ),
    per_class: Optional[int] = typer.Option(
        None, "--per-class", help="Images per class.",
        show_default=f"{_DEMO_DEFAULTS['per_class']}; --quick: {QUICK['per_class']}",
    ),
    seed: int = typer.Option(
        _DEMO_DEFAULTS["seed"], "--seed", help="Seed of the synthetic data, the split and training."
    ),
) -> None:
    """Run the whole pipeline on a small synthetic HAM10000 made on the spot (no download needed).

    Writes 600x450 JPEGs in the HAM10000 layout, splits them by lesion, fine-tunes a small ACC-ViT
    (accvit_femto) and a baseline (convnext_tiny) FROM SCRATCH with a short recipe, and writes the
    report: about 10 minutes on a 2-core CPU. A smoke demonstration, not the paper's protocol.
    """
    settings: dict = dict(QUICK) if quick else {}
    if epochs is not None:
        settings["epochs"] = epochs
    if per_class is not None:
        settings["per_class"] = per_class
    result = run_demo(out, models=model or DEFAULT_MODELS, seed=seed, force=force, **settings)
    for line in result.summary_lines():
        typer.echo(line)
