"""``accvit-med pretrain``: ImageNet pre-training of ACC-ViT with Table 4's recipe, or eval-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from accvit_med.cli.options import DeviceOpt, ForceOpt, ResumeOpt, TrackOpt, WorkersOpt, recipe_options, shown
from accvit_med.training.pretrain.recipe import PretrainRecipe, per_model_defaults


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


@recipe_options(PretrainRecipe, exclude=("model",), shown_defaults=per_model_defaults())
def pretrain(
    data_path: Path = typer.Option(
        ..., "--data-path", help="ImageNet-style folder with train/<class>/ and val/<class>/; "
                                 "with --teacher and --distill-weight 1 any folder of images."),
    model: Optional[str] = typer.Option(None, "--model", help="accvit_femto, _pico, _nano, _tiny, _small or _base."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory.", show_default="runs/pretrain/<model>"),
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    eval_only: bool = typer.Option(False, "--eval-only", help="Only evaluate --weights on val/ (model and EMA)."),
    weights: Optional[str] = typer.Option(
        None, "--weights", show_default="random",
        help="With --eval-only: the checkpoint or state dict to evaluate. Else the student's initial weights: "
        "maxvit_t (inherited from MaxViT-T; imagenet means the same) or PATH.",
    ),
    recipe: dict[str, Any] = None,  # replaced by PretrainRecipe's documented fields, one option each
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Per process and micro-step; the rest is accumulated.",
        show_default="global / processes",
    ),
    workers: shown(WorkersOpt, "min(8, CPUs per process - 1)") = None,
    device: DeviceOpt = "auto",
    amp: bool = typer.Option(True, "--amp/--no-amp",
                             help="bf16 (else fp16 + loss scaling) autocast on CUDA; ignored on the CPU."),
    stop_after: Optional[int] = typer.Option(
        None, "--stop-after",
        help="Stop after this many epochs in this invocation (time-limited jobs); continue with --resume."),
    track: TrackOpt = None,
) -> None:
    """Pre-train ACC-ViT on an ImageNet-style folder with the paper's recipe (Table 4), or evaluate a checkpoint.

    Distillation: --teacher maxvit_t (with --weights maxvit_t for an inherited student) trains on the
    teacher's soft predictions; history.csv logs the student-teacher top-1 agreement.
    Multi-GPU: torchrun --nproc-per-node 8 -m accvit_med pretrain --data-path DIR --model accvit_tiny.
    Writes config.json, history.csv (model and EMA top-1/top-5 per epoch), checkpoints/{last,best}.pt
    (best by EMA top-1) and checkpoints/best_weights.safetensors (the EMA weights of the best epoch) to
    the run directory; each of them loads into `finetune --weights PATH`.
    """
    from accvit_med.errors import UserError
    from accvit_med.training.distributed import is_main_process

    if eval_only:
        if weights is None:
            raise UserError("--eval-only needs --weights PATH (a checkpoint or state dict to evaluate)")
        from accvit_med.training.pretrain.eval_only import evaluate_checkpoint

        val_transform = {key: recipe.get(key) for key in ("val_resize_size", "val_crop_size", "interpolation")}
        results = evaluate_checkpoint(weights, data_path, model, batch_size=batch_size or 64, workers=workers,
                                      device=device, amp=amp, val_transform=val_transform)
        if is_main_process():
            for which, metrics in results.items():
                typer.echo(f"{which:>9}: top-1 {metrics.top1:.3f}%  top-5 {metrics.top5:.3f}%  "
                           f"loss {metrics.loss:.4f}  ({metrics.images} images)")
        return
    if "teacher" not in recipe and ("distill_temperature" in recipe or "distill_weight" in recipe):
        raise UserError("--distill-temperature and --distill-weight need --teacher NAME (e.g. --teacher maxvit_t)")
    if model is None:
        raise UserError("pass --model (accvit_femto, accvit_pico, accvit_nano, accvit_tiny, accvit_small "
                        "or accvit_base)")
    from accvit_med.training.pretrain.engine import PretrainData, PretrainOptions
    from accvit_med.training.pretrain.engine import pretrain as run_pretrain

    data = PretrainData(data_path=data_path, weights=weights)
    options = PretrainOptions(device=device, workers=workers, out=None if out is None else str(out), resume=resume,
                              force=force, batch_size=batch_size, amp=amp, stop_after=stop_after,
                              track=track)
    try:
        result = run_pretrain(model, recipe, data, options)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    if is_main_process():
        typer.echo(f"{result.epochs_done} epoch(s) done; run directory '{result.out}'")
