"""``accvit-med finetune``: fine-tune a registered model on a split (appendix C.2 recipe by default)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune)


def finetune(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name; without --split uses splits/<name>.csv."),
    split: Optional[Path] = typer.Option(None, "--split", help="Split CSV written by `accvit-med split`."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (default: the one in the split's manifest)."),
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name. (default: accvit_tiny)"),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="imagenet (ACC-ViT: inherited from MaxViT-T), maxvit_t, none (from scratch) or a checkpoint file. (default: imagenet)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory. (default: runs/<dataset>/<model>/<name>)"),
    name: Optional[str] = typer.Option(None, "--name", help="Run name under runs/<dataset>/<model>/. (default: seed<seed>)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: 100."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Per process. (default: 32)"),
    lr: Optional[float] = typer.Option(None, "--lr", help="AdamW learning rate, constant. (default: 5e-5)"),
    weight_decay: Optional[float] = typer.Option(
        None, "--weight-decay", help="AdamW weight decay. (default: 1e-8, MaxViT's fine-tuning value)"
    ),
    ema: Optional[float] = typer.Option(
        None, "--ema", metavar="DECAY",
        help="Keep an EMA of the weights (MaxViT: 0.9999); validate, keep and evaluate it. (default: off)",
    ),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Default: 224."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loading processes. (default: min(8, CPUs))"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Default: 42."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many epochs without a better val loss."),
    balance: Optional[str] = typer.Option(None, "--balance", help="none, weights (weighted loss) or sampler. (default: none)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto (cuda, then cpu), cpu, cuda or cuda:N. (default: auto)"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 (else fp16) autocast on CUDA."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory format."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    grad_checkpointing: Optional[bool] = typer.Option(
        None, "--grad-checkpointing/--no-grad-checkpointing",
        help="Recompute each block's activations in backward: lower peak memory, slower steps.",
    ),
    cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Use (and fill) the resized-image cache."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Default: <data root>/.accvit-cache."),
    config: Optional[Path] = typer.Option(None, "--config", help="Recipe file (JSON, TOML or YAML) with any of these keys."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from checkpoints/last.pt."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run directory and start again."),
) -> None:
    """Fine-tune a model on a split and write a run directory.

    Defaults follow the paper (appendix C.2): AdamW 5e-5, no scheduler or warm-up, RandAugment only,
    label smoothing 0.1, gradient clipping 1.0, 100 epochs, best-validation-loss checkpoint
    evaluated on test, 224 input; what C.2 leaves out from MaxViT's fine-tuning configuration
    (weight decay 1e-8, RandAugment 2 ops at magnitude 15). Multi-GPU: torchrun --nproc-per-node N -m accvit_med finetune ...
    Exit codes: 2 bad input (nothing written), 3 training diverged, 130 interrupted (docs/reliability.md).
    """
    from accvit_med.training.finetune import finetune as run_finetune
    from accvit_med.training.recipe import format_recipe, resolve_config

    given = {
        "dataset": dataset, "split": _str(split), "data_dir": _str(data_dir), "model": model, "weights": weights,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "ema_decay": ema,
        "image_size": image_size, "workers": workers, "seed": seed, "patience": patience, "balance": balance,
        "device": device, "amp": amp, "channels_last": channels_last, "compile": compile,
        "grad_checkpointing": grad_checkpointing, "cache": cache,
        "cache_dir": _str(cache_dir),
    }
    recipe = resolve_config(given, config)
    explicit = [k for k, v in given.items() if v is not None]
    if config is not None:
        from accvit_med.training.recipe import read_config_file

        explicit += list(read_config_file(config))
    main_process = os.environ.get("RANK", "0") == "0"

    def show_recipe(final, resuming: bool) -> None:
        if main_process:
            typer.echo(("recipe (resumed run)" if resuming else "recipe") + ":\n" + format_recipe(final))

    try:
        result = run_finetune(
            recipe, out=_str(out), name=name, resume=resume, force=force, explicit=explicit,
            command=["accvit-med", *sys.argv[1:]], on_recipe=show_recipe,
        )
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    if main_process:
        metrics = result.metrics
        typer.echo(
            f"test (best epoch {result.best_epoch}): accuracy {metrics['accuracy']:.4f}  "
            f"macro precision {metrics['macro_precision']:.4f}  macro recall {metrics['macro_recall']:.4f}  "
            f"macro F1 {metrics['macro_f1']:.4f}"
        )
        typer.echo(f"run directory: {result.run_dir}")


def _str(value: Optional[Path]) -> Optional[str]:
    return None if value is None else str(value)
