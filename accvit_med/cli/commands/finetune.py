"""``accvit-med finetune``: fine-tune a registered model on a split (appendix C.2 recipe by default).

What ``finetune --help`` lists, in this order, each option declared once:

1. the data (:class:`~accvit_med.training.recipe.DataSpec`): ``--dataset``, ``--split``, ``--data-dir``;
2. the recipe: one option per documented field of
   :class:`~accvit_med.training.recipe.FinetuneRecipe`, then of
   :class:`~accvit_med.training.recipe.RunOptions` (``--compile``, ``--grad-checkpointing``,
   ``--cache``), derived by :func:`accvit_med.cli.options.recipe_options` where ``recipe`` stands;
3. how this process runs (the rest of RunOptions): ``--device``, ``--workers``, ``--cache-dir``;
4. the run folder: ``--out``, ``--name``, ``--config`` (a recipe file), ``--resume``, ``--force``;
5. experiment tracking: ``--track``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from accvit_med.cli.options import (
    CacheDirOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    ResumeOpt,
    SplitOpt,
    TrackOpt,
    WorkersOpt,
    recipe_options,
)
from accvit_med.training.recipe import FinetuneConfig

# RunOptions fields that name the run folder and what to do with it: the command's own options.
RUN_FOLDER = ("out", "name", "resume", "force")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)


@recipe_options(FinetuneConfig, exclude=RUN_FOLDER)
def finetune(
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    data_dir: DataDirOpt = None,
    recipe: dict[str, Any] = None,  # replaced by FinetuneRecipe's then RunOptions' documented fields
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    cache_dir: CacheDirOpt = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory.",
                                       show_default="runs/<dataset>/<model>/<name>"),
    name: Optional[str] = typer.Option(None, "--name", help="Run name under runs/<dataset>/<model>/.",
                                       show_default="seed<seed>"),
    config: Optional[Path] = typer.Option(None, "--config",
                                          help="Recipe file (JSON, TOML or YAML) with any of these keys."),
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    track: TrackOpt = None,
) -> None:
    """Fine-tune a model on a split and write a run directory.

    Defaults follow the paper (appendix C.2): AdamW 5e-5, no scheduler or warm-up, RandAugment only,
    label smoothing 0.1, gradient clipping 1.0, 100 epochs, best-validation-loss checkpoint
    evaluated on test, 224 input; what C.2 leaves out from MaxViT's fine-tuning configuration
    (weight decay 1e-8, RandAugment 2 ops at magnitude 15).
    Multi-GPU: torchrun --nproc-per-node N -m accvit_med finetune ...
    Exit codes: 2 bad input (nothing written), 3 training diverged, 130 interrupted (docs/reliability.md).
    """
    from accvit_med.training.distributed import is_main_process
    from accvit_med.training.finetune import finetune as run_finetune
    from accvit_med.training.finetune import requested_config
    from accvit_med.training.recipe_file import format_recipe

    given = {key: str(value) if isinstance(value, Path) else value for key, value in recipe.items()}
    resolved = requested_config(given, config, out=None if out is None else str(out), name=name, resume=resume,
                                force=force)

    class ShowRecipe:
        def on_recipe(self, final: FinetuneConfig, resuming: bool) -> None:
            if is_main_process():
                typer.echo(("recipe (resumed run)" if resuming else "recipe") + ":\n" + format_recipe(final))

    try:
        result = run_finetune(resolved, callbacks=[ShowRecipe()], command=["accvit-med", *sys.argv[1:]],
                              track=track)
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
