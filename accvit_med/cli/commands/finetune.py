"""``accvit-med finetune``: fine-tune a registered model on a split (appendix C.2 recipe by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from accvit_med.cli.options import (
    CacheDirOpt, DataDirOpt, DatasetOpt, DeviceOpt, ForceOpt, ResumeOpt, SplitOpt, WorkersOpt, recipe_options,
)
from accvit_med.training.recipe import FinetuneConfig


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)


@recipe_options(FinetuneConfig)
def finetune(
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    data_dir: DataDirOpt = None,
    recipe: dict[str, Any] = None,  # replaced by FinetuneConfig's documented fields, one option each
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    cache_dir: CacheDirOpt = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory.", show_default="runs/<dataset>/<model>/<name>"),
    name: Optional[str] = typer.Option(None, "--name", help="Run name under runs/<dataset>/<model>/.", show_default="seed<seed>"),
    config: Optional[Path] = typer.Option(None, "--config", help="Recipe file (JSON, TOML or YAML) with any of these keys."),
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    track: Optional[str] = typer.Option(None, "--track", envvar="ACCVIT_MED_TRACK", help="Also log the run to tensorboard (<run>/tensorboard/) or mlflow (MLFLOW_TRACKING_URI)."),
) -> None:
    """Fine-tune a model on a split and write a run directory.

    Defaults follow the paper (appendix C.2): AdamW 5e-5, no scheduler or warm-up, RandAugment only,
    label smoothing 0.1, gradient clipping 1.0, 100 epochs, best-validation-loss checkpoint
    evaluated on test, 224 input; what C.2 leaves out from MaxViT's fine-tuning configuration
    (weight decay 1e-8, RandAugment 2 ops at magnitude 15). Multi-GPU: torchrun --nproc-per-node N -m accvit_med finetune ...
    Exit codes: 2 bad input (nothing written), 3 training diverged, 130 interrupted (docs/reliability.md).
    """
    from accvit_med.training.distributed import is_main_process
    from accvit_med.training.finetune import finetune as run_finetune
    from accvit_med.training.recipe import format_recipe, read_config_file, resolve_config

    given = {key: str(value) if isinstance(value, Path) else value for key, value in recipe.items()}
    resolved = resolve_config(given, config)
    explicit = list(given) + (list(read_config_file(config)) if config is not None else [])

    def show_recipe(final, resuming: bool) -> None:
        if is_main_process():
            typer.echo(("recipe (resumed run)" if resuming else "recipe") + ":\n" + format_recipe(final))

    try:
        result = run_finetune(
            resolved, out=None if out is None else str(out), name=name, resume=resume, force=force, explicit=explicit,
            command=["accvit-med", *sys.argv[1:]], on_recipe=show_recipe, track=track,
        )
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    if is_main_process():
        metrics = result.metrics
        typer.echo(
            f"test (best epoch {result.best_epoch}): accuracy {metrics['accuracy']:.4f}  "
            f"macro precision {metrics['macro_precision']:.4f}  macro recall {metrics['macro_recall']:.4f}  "
            f"macro F1 {metrics['macro_f1']:.4f}"
        )
        typer.echo(f"run directory: {result.run_dir}")
