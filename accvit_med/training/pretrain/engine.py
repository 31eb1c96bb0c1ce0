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
from accvit_med.rundir.layout import RunDir, default_pretrain_path, read_run_config
from accvit_med.rundir.record import RunRecord
from accvit_med.tracking.base import TRACKED_FILES, check_track, open_tracker
from accvit_med.training.context import RunContext
from accvit_med.training.distributed import DistContext
from accvit_med.training.engine import RunRecorder, algorithm_settings, check_start, claim_run, open_run
from accvit_med.training.loop import OptimizerStep, cross_entropy, seed_epoch, seed_everything
from accvit_med.training.model_setup import unwrap
from accvit_med.training.pretrain.ema import ExponentialMovingAverage, adjusted_ema_decay
from accvit_med.training.pretrain.epoch import PretrainState, TrainStep, train_epoch
from accvit_med.training.pretrain.imagenet import load_imagenet_folders
from accvit_med.training.pretrain.mixing import MixupCutmix
from accvit_med.training.pretrain.param_groups import param_groups
from accvit_med.training.pretrain.recipe import BatchLayout, PretrainRecipe, batch_layout, recipe_for
from accvit_med.training.pretrain.sampler import RASampler
from accvit_med.training.pretrain.validation import evaluate_topk, val_loader
from accvit_med.training.recipe import RunOptions

HISTORY_COLUMNS = (
    "epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5",
    "ema_val_loss", "ema_val_top1", "ema_val_top5", "val_agreement", "ema_val_agreement", "images_per_s",
    "epoch_seconds",
)


@dataclass(frozen=True)
class PretrainData:
    """What pre-training reads: the image folder and the student's initial weights (new runs only)."""

    data_path: Path
    weights: Optional[str] = None  # maxvit_t, imagenet (= maxvit_t) or PATH; None: random


@dataclass(frozen=True)
class PretrainOptions(RunOptions):
    """How (not what) to run: :class:`~accvit_med.training.recipe.RunOptions` (device, workers, out,
    resume, force) and what fits this machine or this job's time limit."""

    workers: Optional[int] = None  # default: min(8, CPUs per process - 1)
    batch_size: Optional[int] = None  # per process and micro-step; default global / world size
    amp: bool = True
    stop_after: Optional[int] = None  # epochs to run in this invocation (time-limited cluster jobs)
    track: Optional[str] = None  # also send the run to tensorboard or mlflow (accvit_med.tracking)


@dataclass
class PretrainResult:
    out: Path
    epochs_done: int
    history: list[dict] = field(default_factory=list)


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


def pretrain(model: str, overrides: dict[str, Any], data: PretrainData, options: PretrainOptions = PretrainOptions(),
             console: Optional[Console] = None) -> PretrainResult:
    """Run (or resume) the ImageNet pre-training of ``model`` with Table 4's recipe and ``overrides``
    (a resumed run keeps its stored recipe: ``overrides`` must agree with it) on ``data``."""
    console = console or Console(stderr=True)
    run = RunDir(Path(options.out) if options.out is not None else default_pretrain_path(model))
    checkpoint = check_start(run, options.resume, options.force, "pretrain")
    recipe = resolve_recipe(model, overrides, None if checkpoint is None else checkpoint["config"]["recipe"])
    if options.stop_after is not None and options.stop_after < 1:
        raise UserError(f"--stop-after must be at least 1 epoch, got {options.stop_after}")
    check_track(options.track)  # a bad name or a missing package stops the command before any work

    if recipe.teacher is not None:
        from accvit_med.training.pretrain.distill import check_teacher

        check_teacher(recipe.teacher)
    if data.weights is not None and checkpoint is None:
        from accvit_med.models.registry import inherits_maxvit

        # Refuses models wider than MaxViT-T and missing files before anything is written.
        if not inherits_maxvit(recipe.model, data.weights) and not Path(data.weights).is_file():
            raise UserError(f"--weights '{data.weights}' is neither maxvit_t, imagenet nor an existing file")

    device = resolve_device(options.device)
    with open_run(device, console, run=run, amp=options.amp) as ctx:
        layout = batch_layout(recipe.global_batch_size, ctx.dist.world_size, options.batch_size)
        if recipe.teacher is not None:
            from accvit_med.training.pretrain.distill import load_distillation_data

            images = load_distillation_data(data.data_path, recipe, recipe.teacher)
        else:
            images = load_imagenet_folders(data.data_path, recipe)
        if checkpoint is not None and list(checkpoint["classes"]) != images.classes:
            raise UserError(
                f"the class folders of {data.data_path} differ from those of the run being resumed; "
                "resume with the same data, or pass --force to start again"
            )
        claim_run(ctx, run, options.resume, options.force)
        with algorithm_settings(ctx.device, deterministic_cpu=False):
            return _train(recipe, layout, images, data, options, run, ctx, checkpoint)


def _build_state(recipe: PretrainRecipe, source: PretrainData, num_classes: int, ctx: RunContext,
                 checkpoint: Optional[dict]) -> tuple[PretrainState, nn.Module, Optional[dict]]:
    """The state (restored on resume), the module that trains (SyncBatchNorm, DDP) and the
    inheritance summary of the initial weights (None unless inherited)."""
    from accvit_med.models import create

    seed_everything(recipe.seed)  # the same initial weights on every rank
    # Resuming loads the checkpoint's weights, so the initial weights are read only for a new run.
    initial = source.weights if checkpoint is None else None
    created = create(recipe.model, num_classes=num_classes, weights=initial, drop_path_rate=recipe.drop_path_rate)
    model = created.model
    model.to(ctx.device)
    optimizer = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr)
    ema_decay = adjusted_ema_decay(recipe.ema_decay, recipe.global_batch_size, recipe.ema_steps, recipe.epochs)
    ema = ExponentialMovingAverage(model, ema_decay, device=ctx.device) if recipe.ema else None
    state = PretrainState(model, optimizer, ctx.grad_scaler(), ema)
    if checkpoint is not None:
        state.load_state_dict(checkpoint)
    train_model: nn.Module = model
    if ctx.dist.enabled and ctx.device.type == "cuda":
        # The paper's --sync-bn: BatchNorm statistics over the global batch. gloo (CPU) has no
        # SyncBatchNorm support, so CPU runs keep per-process BatchNorm.
        train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = ctx.wrap_for_training(train_model)
    state.model = unwrap(train_model)  # the same modules, possibly with SyncBatchNorm
    return state, train_model, created.weights.inheritance


def _record(recipe: PretrainRecipe, source: PretrainData, classes: list[str], inheritance: Optional[dict],
            layout: BatchLayout, ctx: RunContext) -> RunRecord:
    return RunRecord(
        task="pretrain", recipe=recipe, model=recipe.model, classes=tuple(classes),
        data_path=str(Path(source.data_path).resolve()),
        weights=None if source.weights is None else {"spec": str(source.weights),
                                                     "inheritance": inheritance},
        distributed={"world_size": ctx.dist.world_size, "batch_size_per_process": layout.per_process,
                     "accumulation_steps": layout.accumulation_steps},
        ema_decay_adjusted=adjusted_ema_decay(recipe.ema_decay, recipe.global_batch_size, recipe.ema_steps,
                                              recipe.epochs),
        device=str(ctx.device), amp_dtype=ctx.amp_name,
    )


def _train(recipe: PretrainRecipe, layout: BatchLayout, data, source: PretrainData, options: PretrainOptions,
           run: RunDir, ctx: RunContext, checkpoint: Optional[dict]) -> PretrainResult:
    classes = data.classes
    num_classes = len(classes)
    workers = options.workers if options.workers is not None else default_workers(ctx.dist)
    pin_memory = ctx.device.type == "cuda"
    state, train_model, inheritance = _build_state(recipe, source, num_classes, ctx, checkpoint)
    if checkpoint is not None and ctx.is_main:
        ctx.console.print(f"resuming '{run.path}' after epoch {checkpoint['epoch']} of {recipe.epochs}")
    teacher = None
    labelled = getattr(data, "labelled", True)
    if recipe.teacher is not None:
        from accvit_med.training.pretrain.distill import load_teacher

        teacher = load_teacher(recipe.teacher, ctx.device)
    # Unlabelled distillation keeps the epoch that agrees best with the teacher.
    best_key = ("ema_" if state.ema is not None else "") + ("val_top1" if labelled else "val_agreement")

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        kept = state.state_dict()
        return training_state(
            "pretrain", model=state.model, optimizer=state.optimizer, scaler=state.scaler, epoch=epoch,
            config={"recipe": recipe.to_dict(), "model": recipe.model, "task": "pretrain"}, classes=classes,
            history=state.history, **{k: kept[k] for k in ("model_ema", "model_ema_updates", "global_step")},
        )

    recorder = RunRecorder(run, ctx, HISTORY_COLUMNS, state.history)
    recorder.start(_record(recipe, source, classes, inheritance, layout, ctx), lambda: checkpoint_state(0),
                   resumed=checkpoint is not None)
    # Rank 0 only; a tracker that fails is one warning, never a failed run (SafeTracker).
    tracker = open_tracker(options.track, run.path, ctx.is_main)
    tracker.on_fit_start(read_run_config(run.path))

    train_sampler = RASampler(len(data.train), ctx.dist.world_size, ctx.dist.rank, reps=recipe.ra_reps,
                              seed=recipe.seed)
    train_loader = DataLoader(data.train, batch_size=layout.per_process, sampler=train_sampler,
                              num_workers=workers, pin_memory=pin_memory, drop_last=False)
    val_batches = val_loader(data.val, ctx.dist, layout.per_process, workers, pin_memory)
    # ImageFolder refuses empty classes, so every process has at least one micro-batch.
    steps_per_epoch = math.ceil(len(train_loader) / layout.accumulation_steps)
    mixer = MixupCutmix(num_classes, recipe.mixup_alpha, recipe.cutmix_alpha)
    step = TrainStep(train_model, state.model, state.ema, mixer, cross_entropy(recipe.label_smoothing),
                     OptimizerStep(state.optimizer, state.scaler, recipe.clip_grad_norm, ctx.dist), recipe, layout,
                     steps_per_epoch, teacher)

    start_epoch = len(state.history) + 1
    last_epoch = recipe.epochs if options.stop_after is None else min(recipe.epochs,
                                                                      start_epoch - 1 + options.stop_after)
    with recorder.stops(recipe.lr, step_name="micro-batch"):
        for epoch in range(start_epoch, last_epoch + 1):
            # Randomness from (seed, epoch, rank) alone: resuming continues exactly where a run left off.
            seed_epoch(recipe.seed, epoch, ctx.dist.rank)
            train_sampler.set_epoch(epoch)
            started = time.perf_counter()
            train_loss, images_seen = train_epoch(step, train_loader, epoch, state.global_step, ctx)
            state.global_step += steps_per_epoch
            row = {"epoch": epoch, "lr": state.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                   "images_per_s": images_seen / max(time.perf_counter() - started, 1e-9)}
            _validate(row, state, val_batches, ctx, num_classes, teacher, labelled)
            row["epoch_seconds"] = time.perf_counter() - started
            improved = max(state.history + [row], key=lambda r: r[best_key]) is row
            recorder.end_epoch(row, lambda: checkpoint_state(epoch), _summary_line(row, recipe.epochs, improved),
                               best=(lambda: checkpoint_state(epoch)) if improved else None,
                               on_best=lambda: _save_best_weights(run, recipe, classes, state, epoch, row))
            tracker.on_epoch_end(row)
    tracker.on_fit_end({}, [run.path / name for name in TRACKED_FILES])
    return PretrainResult(out=run.path, epochs_done=len(state.history), history=state.history)


def _validate(row: dict, state: PretrainState, val_batches, ctx: RunContext, num_classes: int,
              teacher: Optional[nn.Module], labelled: bool) -> None:
    """Add the val folder's loss, top-1, top-5 (and agreement with the teacher) of model and EMA to ``row``."""
    epoch = row["epoch"]
    val = evaluate_topk(state.model, val_batches, ctx, num_classes, f"epoch {epoch} val", teacher, labelled)
    row.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5, val_agreement=val.agreement)
    if state.ema is not None:
        ema_val = evaluate_topk(state.ema.module, val_batches, ctx, num_classes, f"epoch {epoch} val (EMA)",
                                teacher, labelled)
        row.update(ema_val_loss=ema_val.loss, ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5,
                   ema_val_agreement=ema_val.agreement)


def _save_best_weights(run: RunDir, recipe: PretrainRecipe, classes: list[str], state: PretrainState, epoch: int,
                       row: dict) -> None:
    """The weights that scored best.pt (the EMA's when there is one), as a shareable safetensors file."""
    prefix = "ema_" if state.ema is not None else ""
    save_weights(run.best_weights, state.scored.state_dict(), {
        "model": recipe.model, "classes": classes, "epoch": epoch,
        "source": "model_ema" if state.ema is not None else "model",
        "val_top1": row[prefix + "val_top1"], "val_agreement": row.get(prefix + "val_agreement"),
        "recipe": recipe.to_dict(),
    })


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
