"""ImageNet pre-training: the run (train, evaluate model and EMA, checkpoint, resume) and eval-only.

One process per GPU under ``torchrun`` (DDP; NCCL on CUDA, gloo on CPU), or a single process. Each
optimizer step sees the recipe's global batch (gradients are accumulated when the processes x
per-process batch fall short); the learning rate follows :mod:`.schedule` at every step; the EMA is
updated every ``ema_steps`` optimizer steps. After every epoch the model and its EMA are evaluated
on the whole val folder (each image exactly once across processes: top-1, top-5, loss) and rank 0
writes ``history.csv`` and ``checkpoints/last.pt``; ``best.pt`` keeps the epoch with the best EMA
top-1 (model top-1 without EMA), the number torchvision reports for its EMA recipes, and
``best_weights.safetensors`` holds just the weights that scored it (the EMA's) with the model name
and classes as metadata: the file to fine-tune from or to share.

Differences from torchvision's ``train.py``: the schedule is evaluated per step (equal at whole
epochs), the EMA cadence counts optimizer steps over the whole run rather than batches within an
epoch, the RA sampler does not round the dataset down to a multiple of 256, the validation
metrics count every image once (no padding duplicates), and mixing happens on the device after
loading rather than in the collate function. Every epoch's randomness is seeded by ``(seed, epoch,
rank)`` so a resumed run continues as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from accvit_med.devices import resolve_device
from accvit_med.errors import UserError
from accvit_med.rundir.checkpoints import save_weights, training_state
from accvit_med.rundir.layout import RunDir
from accvit_med.training.context import RunContext
from accvit_med.training.distributed import DistContext, all_reduce_sum
from accvit_med.training.engine import RunRecorder, algorithm_settings, check_start, claim_run, open_run
from accvit_med.training.loop import check_finite_loss, epoch_seed, seed_everything
from accvit_med.training.model_setup import unwrap
from accvit_med.training.pretrain.distill import distillation_loss
from accvit_med.training.pretrain.ema import ExponentialMovingAverage, adjusted_ema_decay
from accvit_med.training.pretrain.imagenet import load_imagenet_folders
from accvit_med.training.pretrain.mixing import MixupCutmix
from accvit_med.training.pretrain.param_groups import param_groups
from accvit_med.training.pretrain.recipe import BatchLayout, PretrainRecipe, batch_layout, recipe_for
from accvit_med.training.pretrain.sampler import RASampler
from accvit_med.training.pretrain.schedule import lr_at, set_lr
from accvit_med.training.pretrain.validation import evaluate_topk, val_loader

HISTORY_COLUMNS = (
    "epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5",
    "ema_val_loss", "ema_val_top1", "ema_val_top5", "val_agreement", "ema_val_agreement", "images_per_s",
    "epoch_seconds",
)


@dataclass
class PretrainOptions:
    """How (not what) to run: where the data and outputs are, and what fits this machine."""

    data_path: Path
    out: Optional[Path] = None
    batch_size: Optional[int] = None  # per process and micro-step; default global / world size
    workers: Optional[int] = None
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    force: bool = False
    stop_after: Optional[int] = None  # epochs to run in this invocation (time-limited cluster jobs)
    weights: Optional[str] = None  # the student's initial weights: maxvit_t, imagenet (= maxvit_t) or PATH


@dataclass
class PretrainResult:
    out: Path
    epochs_done: int
    history: list[dict] = field(default_factory=list)


def default_out(model: str, root: str = "runs") -> Path:
    return Path(root) / "pretrain" / model


def resolve_recipe(model: str, overrides: dict[str, Any], stored: Optional[dict]) -> PretrainRecipe:
    """The recipe of a new run, or the stored recipe of a resumed one (overrides must agree with it)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if stored is None:
        return recipe_for(model, **overrides)
    recipe = PretrainRecipe(**stored)
    if model != recipe.model:
        raise UserError(f"the run being resumed trains {recipe.model}, not {model}; pass --model {recipe.model}")
    differing = [f"--{k.replace('_', '-')} {v} (run has {getattr(recipe, k)})" for k, v in overrides.items()
                 if getattr(recipe, k) != v]
    if differing:
        raise UserError(
            f"a resumed run keeps its recipe, but {'; '.join(differing)}; drop these options to resume, "
            "or pass --force to start again"
        )
    return recipe


def default_workers(ctx: DistContext) -> int:
    # Leave one core per process for the training loop itself; torchvision's default is 16 per process.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    return max(0, min(8, (os.cpu_count() or 1) // max(local, 1) - 1))


def pretrain(model: str, overrides: dict[str, Any], options: PretrainOptions,
             console: Optional[Console] = None) -> PretrainResult:
    """Run (or resume) the ImageNet pre-training of ``model`` with Table 4's recipe and ``overrides``."""
    console = console or Console(stderr=True)
    run = RunDir(Path(options.out) if options.out is not None else default_out(model))
    checkpoint = check_start(run, options.resume, options.force, "pretrain")
    recipe = resolve_recipe(model, overrides, None if checkpoint is None else checkpoint["config"]["recipe"])
    if options.stop_after is not None and options.stop_after < 1:
        raise UserError(f"--stop-after must be at least 1 epoch, got {options.stop_after}")

    if recipe.teacher is not None:
        from accvit_med.training.pretrain.distill import check_teacher

        check_teacher(recipe.teacher)
    if options.weights is not None and checkpoint is None:
        from accvit_med.models.registry import inherits_maxvit

        # Refuses models wider than MaxViT-T and missing files before anything is written.
        if not inherits_maxvit(recipe.model, options.weights) and not Path(options.weights).is_file():
            raise UserError(f"--weights '{options.weights}' is neither maxvit_t, imagenet nor an existing file")

    device = resolve_device(options.device)
    with open_run(device, console, run=run, amp=options.amp) as ctx:
        layout = batch_layout(recipe.global_batch_size, ctx.dist.world_size, options.batch_size)
        if recipe.teacher is not None:
            from accvit_med.training.pretrain.distill import load_distillation_data

            data = load_distillation_data(options.data_path, recipe, recipe.teacher)
        else:
            data = load_imagenet_folders(options.data_path, recipe)
        if checkpoint is not None and list(checkpoint["classes"]) != data.classes:
            raise UserError(
                f"the class folders of {options.data_path} differ from those of the run being resumed; "
                "resume with the same data, or pass --force to start again"
            )
        claim_run(ctx, run, options.resume, options.force)
        with algorithm_settings(ctx.device, deterministic_cpu=False):
            return _train(recipe, layout, data, options, run, ctx, checkpoint)


def _train(recipe: PretrainRecipe, layout: BatchLayout, data, options: PretrainOptions, run: RunDir,
           ctx: RunContext, checkpoint: Optional[dict]) -> PretrainResult:
    from accvit_med.models import create

    classes = data.classes
    num_classes = len(classes)
    workers = options.workers if options.workers is not None else default_workers(ctx.dist)
    pin_memory = ctx.device.type == "cuda"

    seed_everything(recipe.seed)  # the same initial weights on every rank
    # Resuming loads the checkpoint's weights, so the initial weights are read only for a new run.
    initial = options.weights if checkpoint is None else None
    created = create(recipe.model, num_classes=num_classes, weights=initial, drop_path_rate=recipe.drop_path_rate)
    model = created.model
    model.to(ctx.device)
    teacher = None
    labelled = getattr(data, "labelled", True)
    if recipe.teacher is not None:
        from accvit_med.training.pretrain.distill import load_teacher

        teacher = load_teacher(recipe.teacher, ctx.device)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    scaler = ctx.grad_scaler()
    ema_decay = adjusted_ema_decay(recipe.ema_decay, recipe.global_batch_size, recipe.ema_steps, recipe.epochs)
    ema = ExponentialMovingAverage(model, ema_decay, device=ctx.device) if recipe.ema else None

    history: list[dict] = []
    global_step = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"]:  # empty when saved without fp16 loss scaling (CPU, bf16)
            scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None:
            ema.module.load_state_dict(checkpoint["model_ema"])
            ema.n_averaged.fill_(int(checkpoint["model_ema_updates"]))
        history = list(checkpoint["history"])
        global_step = int(checkpoint["global_step"])
        if ctx.is_main:
            ctx.console.print(f"resuming '{run.path}' after epoch {checkpoint['epoch']} of {recipe.epochs}")

    train_model: nn.Module = model
    if ctx.dist.enabled and ctx.device.type == "cuda":
        # The paper's --sync-bn: BatchNorm statistics over the global batch. gloo (CPU) has no
        # SyncBatchNorm support, so CPU runs keep per-process BatchNorm.
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = ctx.wrap_for_training(train_model)
    model = unwrap(train_model)  # the same modules, possibly with SyncBatchNorm

    run_config = {
        "task": "pretrain",
        "recipe": recipe.to_dict(),
        "model": recipe.model,
        "classes": classes,
        "data_path": str(Path(options.data_path).resolve()),
        "weights": None if options.weights is None else {"spec": str(options.weights),
                                                         "inheritance": created.weights.inheritance},
        "distributed": {"world_size": ctx.dist.world_size, "batch_size_per_process": layout.per_process,
                        "accumulation_steps": layout.accumulation_steps},
        "ema_decay_adjusted": ema_decay,
        "device": str(ctx.device),
        "amp_dtype": ctx.amp_name,
    }

    def best_of(rows: list[dict]) -> Optional[dict]:
        key = "ema_val_top1" if ema is not None else "val_top1"
        if not labelled:  # unlabelled distillation: the best agreement with the teacher
            key = key.replace("top1", "agreement")
        return max(rows, key=lambda r: r[key]) if rows else None

    def state(epoch: int) -> dict[str, Any]:
        return training_state(
            "pretrain", model=model, optimizer=optimizer, scaler=scaler, epoch=epoch,
            config={"recipe": recipe.to_dict(), "model": recipe.model, "task": "pretrain"}, classes=classes,
            history=history, model_ema=None if ema is None else ema.weights(),
            model_ema_updates=0 if ema is None else int(ema.n_averaged), global_step=global_step,
        )

    def save_best_weights(epoch: int, row: dict) -> None:
        # The weights that scored best.pt (the EMA's when there is one), as a shareable safetensors file.
        save_weights(run.best_weights, ema.weights() if ema is not None else model.state_dict(), {
            "model": recipe.model, "classes": classes, "epoch": epoch,
            "source": "model_ema" if ema is not None else "model",
            "val_top1": row["ema_val_top1" if ema is not None else "val_top1"],
            "val_agreement": row.get("ema_val_agreement" if ema is not None else "val_agreement"),
            "recipe": recipe.to_dict(),
        })

    recorder = RunRecorder(run, ctx, HISTORY_COLUMNS, history)
    recorder.start(run_config, lambda: state(0), resumed=checkpoint is not None)

    train_sampler = RASampler(len(data.train), ctx.dist.world_size, ctx.dist.rank, reps=recipe.ra_reps,
                              seed=recipe.seed)
    train_loader = DataLoader(data.train, batch_size=layout.per_process, sampler=train_sampler,
                              num_workers=workers, pin_memory=pin_memory, drop_last=False)
    val_batches = val_loader(data.val, ctx.dist, layout.per_process, workers, pin_memory)
    # ImageFolder refuses empty classes, so every process has at least one micro-batch.
    steps_per_epoch = math.ceil(len(train_loader) / layout.accumulation_steps)
    mixer = MixupCutmix(num_classes, recipe.mixup_alpha, recipe.cutmix_alpha)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    start_epoch = len(history) + 1
    last_epoch = recipe.epochs if options.stop_after is None else min(recipe.epochs, start_epoch - 1 + options.stop_after)
    with recorder.stops(recipe.lr, step_name="micro-batch"):
        for epoch in range(start_epoch, last_epoch + 1):
            # Randomness from (seed, epoch, rank) alone: resuming continues exactly where a run left off.
            seed_everything(epoch_seed(recipe.seed, epoch) + 7919 * ctx.dist.rank)
            train_sampler.set_epoch(epoch)
            started = time.perf_counter()
            step = TrainStep(train_model, model, ema, mixer, criterion, optimizer, scaler, recipe, layout,
                             steps_per_epoch, teacher)
            train_loss, images_seen = _train_epoch(step, train_loader, epoch, global_step, ctx)
            global_step += steps_per_epoch
            train_seconds = time.perf_counter() - started
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "images_per_s": images_seen / max(train_seconds, 1e-9)}
            val = evaluate_topk(model, val_batches, ctx, num_classes, f"epoch {epoch} val", teacher, labelled)
            row.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5, val_agreement=val.agreement)
            if ema is not None:
                ema_val = evaluate_topk(ema.module, val_batches, ctx, num_classes, f"epoch {epoch} val (EMA)",
                                        teacher, labelled)
                row.update(ema_val_loss=ema_val.loss, ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5,
                           ema_val_agreement=ema_val.agreement)
            row["epoch_seconds"] = time.perf_counter() - started
            improved = best_of(history + [row]) is row
            recorder.end_epoch(row, lambda: state(epoch), _summary_line(row, recipe.epochs, improved),
                               best=(lambda: state(epoch)) if improved else None,
                               on_best=lambda: save_best_weights(epoch, row))
    return PretrainResult(out=run.path, epochs_done=len(history), history=history)


@dataclass
class TrainStep:
    """What an optimizer step of pre-training uses (the modules, the loss and the recipe's numbers)."""

    train_model: nn.Module  # DDP-wrapped under torchrun
    model: nn.Module  # the plain model the EMA follows
    ema: Optional[ExponentialMovingAverage]
    mixer: MixupCutmix
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    recipe: PretrainRecipe
    layout: BatchLayout
    steps_per_epoch: int
    teacher: Optional[nn.Module] = None  # distillation: the loss is distill.distillation_loss


def _train_epoch(step: TrainStep, loader: DataLoader, epoch: int, global_step: int,
                 ctx: RunContext) -> tuple[float, int]:
    """One epoch of optimizer steps, each over ``accumulation_steps`` micro-batches; returns (mean loss, images).

    With a teacher the loss is :func:`.distill.distillation_loss` on the same (mixed) images."""
    recipe, layout, optimizer, scaler = step.recipe, step.layout, step.optimizer, step.scaler
    train_model = step.train_model
    train_model.train()
    micro_steps = len(loader)
    loss_sum = images = 0.0
    step_in_epoch = 0
    world = ctx.dist.world_size
    optimizer.zero_grad(set_to_none=True)
    with ctx.progress(f"epoch {epoch}/{recipe.epochs} train", micro_steps * layout.per_process * world) as bar:
        for micro, (batch, labels) in enumerate(loader):
            group_start = (micro // layout.accumulation_steps) * layout.accumulation_steps
            group_size = min(layout.accumulation_steps, micro_steps - group_start)
            last_in_group = micro == group_start + group_size - 1
            if micro == group_start:
                # Whole epochs of the schedule are 1-based in the history, 0-based here.
                set_lr(optimizer, lr_at(epoch - 1 + step_in_epoch / step.steps_per_epoch, base_lr=recipe.lr,
                                        min_lr=recipe.min_lr, epochs=recipe.epochs,
                                        warmup_epochs=recipe.warmup_epochs, warmup_decay=recipe.warmup_decay))
            batch, labels = ctx.images(batch), labels.to(ctx.device, non_blocking=True)
            batch, targets = step.mixer(batch, labels.clamp(min=0))  # unlabelled images carry -1; targets unused then
            # Gradients are all-reduced only on the last micro-batch of an optimizer step.
            sync = last_in_group or not ctx.dist.enabled
            with contextlib.nullcontext() if sync else train_model.no_sync():
                with ctx.autocast():
                    if step.teacher is None:
                        loss = step.criterion(train_model(batch), targets)
                    else:
                        with torch.no_grad():
                            teacher_logits = step.teacher(batch)
                        loss = distillation_loss(train_model(batch), teacher_logits, recipe.distill_temperature,
                                                 recipe.distill_weight, targets, step.criterion)
                check_finite_loss(loss, micro + 1, ctx.dist)  # before backward: the weights stay finite
                scaler.scale(loss / group_size).backward()
            loss_sum += float(loss.detach()) * labels.shape[0]
            images += labels.shape[0]
            bar.advance(labels.shape[0] * world, loss_sum / images)
            if not last_in_group:
                continue
            if recipe.clip_grad_norm:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                nn.utils.clip_grad_norm_(train_model.parameters(), recipe.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step_in_epoch += 1
            if step.ema is not None and (global_step + step_in_epoch) % recipe.ema_steps == 0:
                step.ema.update_parameters(step.model)
                if epoch <= recipe.warmup_epochs:
                    step.ema.restart()  # during warm-up the EMA keeps copying the weights, as torchvision
    loss_sum, images = all_reduce_sum(ctx.dist, [loss_sum, images])
    return loss_sum / max(images, 1.0), int(images)


def _summary_line(row: dict, epochs: int, improved: bool) -> str:
    line = f"epoch {row['epoch']:>3}/{epochs}  lr {row['lr']:.3g}  train loss {row['train_loss']:.4f}"
    if row.get("val_top1") is not None:
        line += f"  val top-1 {row['val_top1']:.2f} top-5 {row['val_top5']:.2f}"
    if row.get("ema_val_top1") is not None:
        line += f"  EMA top-1 {row['ema_val_top1']:.2f} top-5 {row['ema_val_top5']:.2f}"
    if row.get("val_agreement") is not None:
        line += f"  agreement with teacher {row['val_agreement']:.2f}%"
    if row.get("ema_val_agreement") is not None:
        line += f" (EMA {row['ema_val_agreement']:.2f}%)"
    line += f"  {row['images_per_s']:.1f} img/s"
    return line + ("  (best)" if improved else "")
