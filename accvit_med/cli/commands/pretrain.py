"""``accvit-med pretrain``: ImageNet pre-training of ACC-ViT with Table 4's recipe, or eval-only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def pretrain(
    data_path: Path = typer.Option(..., "--data-path", help="ImageNet-style folder with train/<class>/ and val/<class>/; with --teacher and --distill-weight 1 any folder of images."),
    model: Optional[str] = typer.Option(None, "--model", help="accvit_femto, _pico, _nano, _tiny, _small or _base."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory.  [default: runs/pretrain/<model>]"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from <out>/checkpoints/last.pt."),
    force: bool = typer.Option(False, "--force", help="Delete an existing run directory and start again."),
    eval_only: bool = typer.Option(False, "--eval-only", help="Only evaluate --weights on val/ (model and EMA)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="With --eval-only: the checkpoint or state dict to evaluate. Else the student's initial weights: maxvit_t (inherited from MaxViT-T; imagenet means the same) or PATH.  [default: random]"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Distil from this registry baseline's ImageNet weights (e.g. maxvit_t); see docs/pretrained-weights.md."),
    distill_temperature: Optional[float] = typer.Option(None, "--distill-temperature", help="Softmax temperature of the distillation KL.  [default: 1.0]"),
    distill_weight: Optional[float] = typer.Option(None, "--distill-weight", help="Share of the distillation loss (the rest: label loss); 1 needs no labels, so --data-path may be a plain image folder.  [default: 1.0]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="[default: 400]"),
    warmup_epochs: Optional[int] = typer.Option(None, "--warmup-epochs", help="Linear warm-up.  [default: 32]"),
    warmup_decay: Optional[float] = typer.Option(None, "--warmup-decay", help="Warm-up starts at lr x this.  [default: 0.01]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW lr (not rescaled with the batch).  [default: 1e-3; small, base 5e-4]"),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", help="Cosine floor.  [default: 1e-5; small, base 5e-6]"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="None on norms, biases, position tables.  [default: 0.05]"),
    global_batch_size: Optional[int] = typer.Option(None, "--global-batch-size", help="Images per optimizer step.  [default: Table 4, e.g. tiny 1024]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Per process and micro-step; the rest is accumulated.  [default: global / processes]"),
    drop_path_rate: Optional[float] = typer.Option(None, "--drop-path-rate", help="Stochastic depth.  [default: femto/pico 0, nano 0.1, tiny 0.2, small 0.3, base 0.4]"),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="[default: 0.1]"),
    mixup_alpha: Optional[float] = typer.Option(None, "--mixup-alpha", help="0 disables.  [default: 0.8]"),
    cutmix_alpha: Optional[float] = typer.Option(None, "--cutmix-alpha", help="0 disables.  [default: 0.8]"),
    auto_augment: Optional[str] = typer.Option(None, "--auto-augment", help="ta_wide or none.  [default: ta_wide]"),
    ra_reps: Optional[int] = typer.Option(None, "--ra-reps", help="Repeated augmentation; 1 disables.  [default: 3]"),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep an EMA of the weights.  [default: on]"),
    ema_steps: Optional[int] = typer.Option(None, "--ema-steps", help="Optimizer steps between EMA updates.  [default: 32]"),
    ema_decay: Optional[float] = typer.Option(None, "--ema-decay", help="Before torchvision's adjustment.  [default: 0.99998]"),
    clip_grad_norm: Optional[float] = typer.Option(None, "--clip-grad-norm", help="0 disables.  [default: 1.0]"),
    train_crop_size: Optional[int] = typer.Option(None, "--train-crop-size", help="[default: 224]"),
    val_resize_size: Optional[int] = typer.Option(None, "--val-resize-size", help="[default: 224]"),
    val_crop_size: Optional[int] = typer.Option(None, "--val-crop-size", help="[default: 224]"),
    interpolation: Optional[str] = typer.Option(None, "--interpolation", help="bicubic or bilinear.  [default: bicubic]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="[default: 0]"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Data-loading processes per process.  [default: min(8, CPUs per process - 1)]"),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then cpu), cpu, cuda."),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 (else fp16 + loss scaling) autocast on CUDA; ignored on the CPU."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after this many epochs in this invocation (time-limited jobs); continue with --resume."),
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

    main_process = os.environ.get("RANK", "0") == "0"
    if eval_only:
        if weights is None:
            raise UserError("--eval-only needs --weights PATH (a checkpoint or state dict to evaluate)")
        from accvit_med.training.pretrain.evaluate_checkpoint import evaluate_checkpoint

        results = evaluate_checkpoint(weights, data_path, model, batch_size=batch_size or 64, workers=workers,
                                      device=device, amp=amp, val_transform={
                                          "val_resize_size": val_resize_size, "val_crop_size": val_crop_size,
                                          "interpolation": interpolation})
        if main_process:
            for which, metrics in results.items():
                typer.echo(f"{which:>9}: top-1 {metrics.top1:.3f}%  top-5 {metrics.top5:.3f}%  "
                           f"loss {metrics.loss:.4f}  ({metrics.images} images)")
        return
    if teacher is None and (distill_temperature is not None or distill_weight is not None):
        raise UserError("--distill-temperature and --distill-weight need --teacher NAME (e.g. --teacher maxvit_t)")
    if model is None:
        raise UserError("pass --model (accvit_femto, accvit_pico, accvit_nano, accvit_tiny, accvit_small or accvit_base)")
    from accvit_med.training.pretrain.engine import PretrainOptions
    from accvit_med.training.pretrain.engine import pretrain as run_pretrain

    overrides = {
        "epochs": epochs, "warmup_epochs": warmup_epochs, "warmup_decay": warmup_decay, "lr": lr, "min_lr": min_lr,
        "weight_decay": weight_decay, "global_batch_size": global_batch_size, "drop_path_rate": drop_path_rate,
        "label_smoothing": label_smoothing, "mixup_alpha": mixup_alpha, "cutmix_alpha": cutmix_alpha,
        "auto_augment": auto_augment, "ra_reps": ra_reps, "ema": ema, "ema_steps": ema_steps, "ema_decay": ema_decay,
        "clip_grad_norm": clip_grad_norm, "train_crop_size": train_crop_size, "val_resize_size": val_resize_size,
        "val_crop_size": val_crop_size, "interpolation": interpolation, "seed": seed,
        "teacher": teacher, "distill_temperature": distill_temperature, "distill_weight": distill_weight,
    }
    options = PretrainOptions(data_path=data_path, out=out, batch_size=batch_size, workers=workers, device=device,
                              amp=amp, resume=resume, force=force, stop_after=stop_after, weights=weights)
    try:
        result = run_pretrain(model, overrides, options)
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    if main_process:
        typer.echo(f"{result.epochs_done} epoch(s) done; run directory '{result.out}'")
