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
import csv
import io
import json
import os
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Subset

from accvit_med.errors import TrainingDiverged, UserError
from accvit_med.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable
from accvit_med.rundir.checkpoints import capture_rng_state, load_checkpoint, save_checkpoint
from accvit_med.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from accvit_med.training.loop import (NonFiniteLoss, autocast_context, check_finite_loss, epoch_seed, eval_indices,
                                      seed_everything)
from accvit_med.training.model_setup import resolve_device, unwrap
from accvit_med.progress import EpochBar
from accvit_med.rundir.claim import RunDir, prepare_run_dir, release_run_dir
from accvit_med.training.pretrain.distill import distillation_loss
from accvit_med.training.pretrain.ema import ExponentialMovingAverage, adjusted_ema_decay
from accvit_med.training.pretrain.imagenet import load_imagenet_folders
from accvit_med.training.pretrain.mixing import MixupCutmix
from accvit_med.training.pretrain.param_groups import param_groups
from accvit_med.training.pretrain.recipe import RECIPES, BatchLayout, PretrainRecipe, batch_layout, recipe_for
from accvit_med.training.pretrain.sampler import RASampler
from accvit_med.training.pretrain.schedule import lr_at, set_lr

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


@dataclass(frozen=True)
class Metrics:
    loss: Optional[float]  # None: no labels (a distillation run on unlabelled images)
    top1: Optional[float]
    top5: Optional[float]
    images: int
    agreement: Optional[float] = None  # % of images where student and teacher agree on the top class


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


def _amp_dtype(amp: bool, device: torch.device) -> Optional[torch.dtype]:
    # Autocast only on CUDA: bf16 where the GPU has it (no loss scaling needed), fp16 + GradScaler else.
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _default_workers(ctx: DistContext) -> int:
    # Leave one core per process for the training loop itself; torchvision's default is 16 per process.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
    return max(0, min(8, (os.cpu_count() or 1) // max(local, 1) - 1))


def _history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k) for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def best_weights_path(run: RunDir) -> Path:
    return run.checkpoints / "best_weights.safetensors"


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """A state dict as safetensors (pure tensors, nothing to unpickle); ``metadata`` values as JSON."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    atomic_write_bytes(path, save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()}))


def read_weights_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:  # metadata written by another tool
            decoded[key] = value
    return decoded


def _collective_check(ctx: DistContext, action) -> Any:
    """Run ``action`` on rank 0 and raise its UserError on every rank (no rank is left waiting)."""
    message, value = None, None
    if ctx.is_main:
        try:
            value = action()
        except UserError as err:
            message = str(err)
    message = broadcast_object(ctx, message)
    if message is not None:
        raise UserError(message)
    return value


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype, ctx: DistContext,
             num_classes: int, console: Console, description: str, teacher: Optional[nn.Module] = None,
             labelled: bool = True) -> Metrics:
    """Loss, top-1 and top-5 (top-k with k = min(5, classes)) over every process's share of ``loader``;
    with a ``teacher``, also the top-1 agreement with it; without labels, only that agreement."""
    model.eval()
    k = min(5, num_classes)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = correct1 = correct5 = agree = count = 0.0
    with EpochBar(console, description, len(loader.dataset) * ctx.world_size, ctx.is_main) as bar:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast_context(device, amp_dtype):
                logits = model(images)
                teacher_top = None if teacher is None else teacher(images).argmax(dim=1)
            logits = logits.float()
            if teacher_top is not None:
                agree += float((logits.argmax(dim=1) == teacher_top).sum())
            if labelled:
                loss_sum += float(criterion(logits, labels))
                top = logits.topk(k, dim=1).indices
                hits = top == labels[:, None]
                correct1 += float(hits[:, 0].sum())
                correct5 += float(hits.any(dim=1).sum())
            count += labels.shape[0]
            bar.advance(labels.shape[0] * ctx.world_size)
    loss_sum, correct1, correct5, agree, count = all_reduce_sum(ctx, [loss_sum, correct1, correct5, agree, count])
    count = max(count, 1.0)
    agreement = None if teacher is None else 100.0 * agree / count
    if not labelled:
        return Metrics(loss=None, top1=None, top5=None, images=int(count), agreement=agreement)
    return Metrics(loss=loss_sum / count, top1=100.0 * correct1 / count, top5=100.0 * correct5 / count,
                   images=int(count), agreement=agreement)


def _val_loader(val_set, ctx: DistContext, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    # An unpadded shard per rank: summed counts cover each val image exactly once.
    shard = Subset(val_set, eval_indices(len(val_set), ctx))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)


def pretrain(model: str, overrides: dict[str, Any], options: PretrainOptions,
             console: Optional[Console] = None) -> PretrainResult:
    """Run (or resume) the ImageNet pre-training of ``model`` with Table 4's recipe and ``overrides``."""
    console = console or Console(stderr=True)
    out = Path(options.out) if options.out is not None else default_out(model)
    run = RunDir(out)
    check_writable(out)
    if options.resume and options.force:
        raise UserError("--resume and --force contradict each other; pass one of them")
    checkpoint = None
    if options.resume:
        if not run.last.is_file():
            raise UserError(f"cannot resume: '{run.last}' does not exist; start the run without --resume")
        checkpoint = load_checkpoint(run.last)
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
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        layout = batch_layout(recipe.global_batch_size, ctx.world_size, options.batch_size)
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
        _collective_check(ctx, lambda: prepare_run_dir(out, resume=options.resume, force=options.force))
        return _train(recipe, layout, data, options, run, ctx, device, checkpoint, console)
    finally:
        release_run_dir(out)
        shutdown_distributed(ctx)


def _train(recipe: PretrainRecipe, layout: BatchLayout, data, options: PretrainOptions, run: RunDir,
           ctx: DistContext, device: torch.device, checkpoint: Optional[dict], console: Console) -> PretrainResult:
    from accvit_med.models import create_model

    classes = data.classes
    num_classes = len(classes)
    workers = options.workers if options.workers is not None else _default_workers(ctx)
    pin_memory = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # speed over bitwise reproducibility on GPUs

    seed_everything(recipe.seed)  # the same initial weights on every rank
    # Resuming loads the checkpoint's weights, so the initial weights are read only for a new run.
    initial = options.weights if checkpoint is None else None
    model = create_model(recipe.model, num_classes=num_classes, weights=initial, drop_path_rate=recipe.drop_path_rate)
    model.to(device)
    teacher = None
    labelled = getattr(data, "labelled", True)
    if recipe.teacher is not None:
        from accvit_med.training.pretrain.distill import load_teacher

        teacher = load_teacher(recipe.teacher, device)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    amp_dtype = _amp_dtype(options.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    ema_decay = adjusted_ema_decay(recipe.ema_decay, recipe.global_batch_size, recipe.ema_steps, recipe.epochs)
    ema = ExponentialMovingAverage(model, ema_decay, device=device) if recipe.ema else None

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
            console.print(f"resuming '{run.path}' after epoch {checkpoint['epoch']} of {recipe.epochs}")

    train_model: nn.Module = model
    if ctx.enabled:
        if device.type == "cuda":
            # The paper's --sync-bn: BatchNorm statistics over the global batch. gloo (CPU) has no
            # SyncBatchNorm support, so CPU runs keep per-process BatchNorm.
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    model = unwrap(train_model)  # the same modules, possibly with SyncBatchNorm

    run_config = {
        "task": "pretrain",
        "recipe": recipe.to_dict(),
        "model": recipe.model,
        "classes": classes,
        "data_path": str(Path(options.data_path).resolve()),
        "weights": None if options.weights is None else {"spec": str(options.weights),
                                                         "inheritance": getattr(model, "inheritance", None)},
        "distributed": {"world_size": ctx.world_size, "batch_size_per_process": layout.per_process,
                        "accumulation_steps": layout.accumulation_steps},
        "ema_decay_adjusted": ema_decay,
        "device": str(device),
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "versions": _versions(),
        "command": list(sys.argv),
    }

    def best_of(rows: list[dict]) -> Optional[dict]:
        key = "ema_val_top1" if ema is not None else "val_top1"
        if not labelled:  # unlabelled distillation: the best agreement with the teacher
            key = key.replace("top1", "agreement")
        return max(rows, key=lambda r: r[key]) if rows else None

    def state(epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            # Kept for the checkpoint layout shared with finetune; resuming does not need it, as
            # every epoch reseeds from (seed, epoch, rank).
            "rng": capture_rng_state(),
            "config": {"recipe": recipe.to_dict(), "model": recipe.model, "task": "pretrain"},
            "classes": classes,
            "model_ema": None if ema is None else ema.weights(),
            "model_ema_updates": 0 if ema is None else int(ema.n_averaged),
            "global_step": global_step,
            "history": history,
        }

    start_epoch = len(history) + 1
    if ctx.is_main:
        atomic_write_json(run.config, run_config)
        if checkpoint is None:
            save_checkpoint(run.last, state(0))  # something to resume even if epoch 1 is interrupted
            atomic_write_text(run.history, _history_csv(history))
    barrier(ctx)

    train_sampler = RASampler(len(data.train), ctx.world_size, ctx.rank, reps=recipe.ra_reps, seed=recipe.seed)
    train_loader = DataLoader(data.train, batch_size=layout.per_process, sampler=train_sampler,
                              num_workers=workers, pin_memory=pin_memory, drop_last=False)
    val_loader = _val_loader(data.val, ctx, layout.per_process, workers, pin_memory)
    # ImageFolder refuses empty classes, so every process has at least one micro-batch.
    steps_per_epoch = math.ceil(len(train_loader) / layout.accumulation_steps)
    mixer = MixupCutmix(num_classes, recipe.mixup_alpha, recipe.cutmix_alpha)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    last_epoch = recipe.epochs if options.stop_after is None else min(recipe.epochs, start_epoch - 1 + options.stop_after)
    try:
        for epoch in range(start_epoch, last_epoch + 1):
            # Randomness from (seed, epoch, rank) alone: resuming continues exactly where a run left off.
            seed_everything(epoch_seed(recipe.seed, epoch) + 7919 * ctx.rank)
            train_sampler.set_epoch(epoch)
            started = time.perf_counter()
            train_loss, images_seen = _train_epoch(
                train_model, model, ema, train_loader, mixer, criterion, optimizer, scaler, amp_dtype, recipe,
                layout, epoch, steps_per_epoch, ctx, device, console, global_step, teacher,
            )
            global_step += steps_per_epoch
            train_seconds = time.perf_counter() - started
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "images_per_s": images_seen / max(train_seconds, 1e-9)}
            val = evaluate(model, val_loader, device, amp_dtype, ctx, num_classes, console, f"epoch {epoch} val",
                           teacher, labelled)
            row.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5, val_agreement=val.agreement)
            if ema is not None:
                ema_val = evaluate(ema.module, val_loader, device, amp_dtype, ctx, num_classes, console,
                                   f"epoch {epoch} val (EMA)", teacher, labelled)
                row.update(ema_val_loss=ema_val.loss, ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5,
                           ema_val_agreement=ema_val.agreement)
            row["epoch_seconds"] = time.perf_counter() - started
            history.append(row)
            if ctx.is_main:
                improved = best_of(history) is row
                current = state(epoch)
                save_checkpoint(run.last, current)
                if improved:
                    save_checkpoint(run.best, current)
                    best_weights = current["model_ema"] if ema is not None else current["model"]
                    save_weights(best_weights_path(run), best_weights, {
                        "model": recipe.model, "classes": classes, "epoch": epoch,
                        "source": "model_ema" if ema is not None else "model",
                        "val_top1": row["ema_val_top1" if ema is not None else "val_top1"],
                        "val_agreement": row.get("ema_val_agreement" if ema is not None else "val_agreement"),
                        "recipe": recipe.to_dict(),
                    })
                atomic_write_text(run.history, _history_csv(history))
                console.print(_summary_line(row, recipe.epochs, improved), soft_wrap=True)
            barrier(ctx)
    except NonFiniteLoss as err:
        raise TrainingDiverged(
            f"training diverged: the loss became {err.value} at epoch {len(history) + 1}, micro-batch {err.step}; "
            f"stopped, '{run.last}' keeps epoch {len(history)}, the last good one; try a lower --lr (now "
            f"{recipe.lr:g}), --no-amp, or gradient clipping (clip_grad_norm)"
        ) from None
    except KeyboardInterrupt:
        if ctx.is_main:
            console.print(
                f"[yellow]interrupted during epoch {len(history) + 1}[/]: '{run.last}' holds epoch {len(history)}; "
                "continue with the same command plus --resume",
                soft_wrap=True,
            )
        raise
    return PretrainResult(out=run.path, epochs_done=len(history), history=history)


def _train_epoch(train_model, model, ema, loader, mixer, criterion, optimizer, scaler, amp_dtype,
                 recipe: PretrainRecipe, layout: BatchLayout, epoch: int, steps_per_epoch: int,
                 ctx: DistContext, device: torch.device, console: Console, global_step: int,
                 teacher: Optional[nn.Module] = None) -> tuple[float, int]:
    """One epoch of optimizer steps, each over ``accumulation_steps`` micro-batches; returns (mean loss, images).

    With a ``teacher`` the loss is :func:`.distill.distillation_loss` on the same (mixed) images."""
    train_model.train()
    micro_steps = len(loader)
    loss_sum = images = 0.0
    step_in_epoch = 0
    optimizer.zero_grad(set_to_none=True)
    with EpochBar(console, f"epoch {epoch}/{recipe.epochs} train", micro_steps * layout.per_process * ctx.world_size,
                  ctx.is_main) as bar:
        for micro, (batch, labels) in enumerate(loader):
            group_start = (micro // layout.accumulation_steps) * layout.accumulation_steps
            group_size = min(layout.accumulation_steps, micro_steps - group_start)
            last_in_group = micro == group_start + group_size - 1
            if micro == group_start:
                # Whole epochs of the schedule are 1-based in the history, 0-based here.
                set_lr(optimizer, lr_at(epoch - 1 + step_in_epoch / steps_per_epoch, base_lr=recipe.lr,
                                        min_lr=recipe.min_lr, epochs=recipe.epochs,
                                        warmup_epochs=recipe.warmup_epochs, warmup_decay=recipe.warmup_decay))
            batch, labels = batch.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            batch, targets = mixer(batch, labels.clamp(min=0))  # unlabelled images carry -1; targets unused then
            # Gradients are all-reduced only on the last micro-batch of an optimizer step.
            sync = last_in_group or not ctx.enabled
            with contextlib.nullcontext() if sync else train_model.no_sync():
                with autocast_context(device, amp_dtype):
                    if teacher is None:
                        loss = criterion(train_model(batch), targets)
                    else:
                        with torch.no_grad():
                            teacher_logits = teacher(batch)
                        loss = distillation_loss(train_model(batch), teacher_logits, recipe.distill_temperature,
                                                 recipe.distill_weight, targets, criterion)
                check_finite_loss(loss, micro + 1, ctx)  # before backward: the weights stay finite
                scaler.scale(loss / group_size).backward()
            loss_sum += float(loss.detach()) * labels.shape[0]
            images += labels.shape[0]
            bar.advance(labels.shape[0] * ctx.world_size, loss_sum / images)
            if not last_in_group:
                continue
            if recipe.clip_grad_norm:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                nn.utils.clip_grad_norm_(train_model.parameters(), recipe.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step_in_epoch += 1
            if ema is not None and (global_step + step_in_epoch) % recipe.ema_steps == 0:
                ema.update_parameters(model)
                if epoch <= recipe.warmup_epochs:
                    ema.restart()  # during warm-up the EMA keeps copying the weights, as torchvision
    loss_sum, images = all_reduce_sum(ctx, [loss_sum, images])
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


def _versions() -> dict[str, str]:
    from accvit_med.env import environment_summary

    return environment_summary()


def evaluate_checkpoint(weights: str | Path, data_path: str | Path, model: Optional[str] = None, *,
                        batch_size: int = 64, workers: Optional[int] = None, device: str = "auto",
                        amp: bool = True, val_transform: Optional[dict[str, Any]] = None,
                        console: Optional[Console] = None) -> dict[str, Metrics]:
    """Top-1/top-5 and loss on ``data_path/val`` of a checkpoint's model (and its EMA, when it has one).

    ``weights``: a pre-training checkpoint (``last.pt``/``best.pt``), or any state dict
    (``.pth``/``.safetensors``, also wrapped in ``model``/``state_dict``); ``model`` is required when
    the file does not name its model. ``val_transform`` overrides ``val_resize_size``,
    ``val_crop_size`` or ``interpolation`` (e.g. torchvision's 232/224 for swin_t). Runs under
    torchrun too (each process evaluates a shard).
    """
    from accvit_med.models import create_model
    from accvit_med.models.weights import read_state_dict

    console = console or Console(stderr=True)
    states = {"model": read_state_dict(weights)}
    stored: dict[str, Any] = {}
    if Path(weights).suffix == ".safetensors":
        stored = read_weights_metadata(Path(weights))
    else:
        raw = load_checkpoint(weights)
        if isinstance(raw, dict):
            stored = raw.get("config") or {}
            if isinstance(raw.get("model_ema"), dict):
                states["model_ema"] = raw["model_ema"]
            if raw.get("classes") is not None:
                stored = {**stored, "classes": list(raw["classes"])}
    stored_model = stored.get("model")
    if model is None and stored_model is None:
        raise UserError(f"{weights} does not say which model it holds; pass --model")
    if model is not None and stored_model is not None and model != stored_model:
        raise UserError(f"{weights} holds {stored_model}, not {model}; pass --model {stored_model} or drop --model")
    name = model or stored_model
    # Only the val transform settings of the recipe are used here; they are the same for every variant.
    recipe = PretrainRecipe(**stored["recipe"]) if "recipe" in stored else RECIPES.get(name, RECIPES["accvit_tiny"])
    recipe = recipe.replace(**{k: v for k, v in (val_transform or {}).items() if v is not None})
    data = load_imagenet_folders(data_path, recipe, train=False)
    if "classes" in stored and stored["classes"] != data.classes:
        raise UserError(f"the class folders of {data_path}/val differ from the classes {weights} was trained on; "
                        "evaluate on the matching val folder")

    dev = resolve_device(device)
    ctx = init_distributed(dev.type)
    if ctx.enabled and dev.type == "cuda":
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    try:
        amp_dtype = _amp_dtype(amp, dev)
        loader = _val_loader(data.val, ctx, batch_size, _default_workers(ctx) if workers is None else workers,
                             dev.type == "cuda")
        network = create_model(name, num_classes=len(data.classes))
        results = {}
        for which, state in states.items():
            try:
                network.load_state_dict(state)
            except RuntimeError as err:
                raise UserError(f"{weights} ({which}) does not fit {name} with {len(data.classes)} classes "
                                f"({str(err).splitlines()[0]}); pass the --model it was trained as") from None
            network.to(dev)
            results[which] = evaluate(network, loader, dev, amp_dtype, ctx, len(data.classes), console, f"val ({which})")
        return results
    finally:
        shutdown_distributed(ctx)
