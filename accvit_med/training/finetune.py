"""Fine-tune a model on a split and leave a run directory a reviewer can trust.

:func:`finetune` is the whole job: read the split, build the model, train with the recipe,
checkpoint every epoch (atomic, resumable), keep the best-validation-loss weights, and finally
evaluate those on val and test. The CLI command ``accvit-med finetune`` only parses options.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from rich.console import Console
from torch import nn

from accvit_med.devices import resolve_device
from accvit_med.errors import TrainingDiverged, UserError
from accvit_med.progress import EpochBar
from accvit_med.rundir.checkpoints import check_classes, load_checkpoint, restore_rng_state, training_state
from accvit_med.rundir.layout import RunDir, default_run_path, read_run_config
from accvit_med.tracking import TRACKED_FILES, check_track, open_tracker
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.distributed import broadcast_object
from accvit_med.training.ema import horizon_steps, make_ema
from accvit_med.training.engine import RunRecorder, algorithm_settings, check_start, claim_run, open_run
from accvit_med.training.loop import epoch_seed, seed_everything, train_one_epoch
from accvit_med.training.model_setup import FROM_SCRATCH_WARNING, build_model, check_model_choice, head_reuse_warning
from accvit_med.training.part_predictions import evaluate_part, write_final_outputs
from accvit_med.training.recipe import RESUMABLE_CHANGES, FinetuneConfig, stored_recipe
from accvit_med.training.run_split import load_run_split

# A model factory builds a network for a number of classes; library users and tests may pass one
# instead of a registry name (config.model is then only a label).
ModelFactory = Callable[[int], nn.Module]

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_seconds")


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict
    best_epoch: int
    history: list[dict]


def resolve_run_path(config: FinetuneConfig, out: Optional[str] = None, name: Optional[str] = None) -> Path:
    """``--out``, else runs/<dataset>/<model>/<name or seed42>; the dataset may come from the split."""
    if out:
        return Path(out)
    dataset = config.dataset
    if not dataset:
        dataset = load_run_split(config).manifest.get("dataset") or "custom"
    return default_run_path(dataset, config.model, config.seed, name)


def merge_resumed_config(stored: dict, config: FinetuneConfig, explicit: Optional[Iterable[str]]) -> FinetuneConfig:
    """The stored recipe, with the fields the user set now; only runtime fields may change."""
    names = [f.name for f in fields(FinetuneConfig)]
    explicit = set(names if explicit is None else explicit)
    merged = stored_recipe(stored)  # a run started under older defaults keeps them
    changes = {k: getattr(config, k) for k in explicit if getattr(config, k) != getattr(merged, k)}
    forbidden = sorted(k for k in changes if k not in RESUMABLE_CHANGES)
    if forbidden:
        described = ", ".join(f"{k}={getattr(merged, k)!r} (now {changes[k]!r})" for k in forbidden)
        raise UserError(f"cannot resume with a different recipe: the run has {described}; drop those options or pass --force to start again")
    return replace(merged, **changes).validate()


def finetune(
    config: FinetuneConfig,
    *,
    out: Optional[str] = None,
    name: Optional[str] = None,
    resume: bool = False,
    force: bool = False,
    explicit: Optional[Iterable[str]] = None,
    model_factory: Optional[ModelFactory] = None,
    command: Optional[list[str]] = None,
    console: Optional[Console] = None,
    on_recipe: Optional[Callable[[FinetuneConfig, bool], None]] = None,
    track: Optional[str] = None,
) -> FinetuneResult:
    """Run (or resume) one fine-tuning run; returns its directory and test metrics.

    ``explicit`` names the fields the user set (on resume, the stored recipe fills the others);
    None means all of ``config``. ``on_recipe(config, resuming)`` receives the final recipe
    before training starts (the CLI prints it). ``track``: also send the run to ``tensorboard``
    or ``mlflow`` (:mod:`accvit_med.tracking`).
    """
    check_track(track)
    console = console or Console(stderr=True)
    run = RunDir(resolve_run_path(config, out, name))
    checkpoint = check_start(run, resume, force, "finetune")
    if checkpoint is not None:
        config = merge_resumed_config(checkpoint["config"], config, explicit)
    split = load_run_split(config)
    if model_factory is None:
        check_model_choice(config)
    dataset = config.dataset or str(split.manifest.get("dataset", "custom"))
    if checkpoint is not None:
        check_classes(checkpoint["classes"], split.classes, f"run '{run.path}'")
        if checkpoint["split_sha256"] != split.sha256:
            raise UserError(
                f"split '{split.csv_path}' changed since run '{run.path}' started (sha256 differs); "
                "resume with the original split or pass --force to start again"
            )

    if on_recipe is not None:
        on_recipe(config, checkpoint is not None)
    device = resolve_device(config.device)
    # Model and data are checked before the run directory is touched: a mistake leaves nothing.
    seed_everything(config.seed)  # the new head's initial weights
    model, weights_spec = build_model(config, len(split.classes), model_factory)
    reused = head_reuse_warning(config.weights, list(split.classes)) if model_factory is None else None
    if reused:
        console.print(reused, markup=False, soft_wrap=True)
    data = rundata.build_run_data(split, config)
    # Every image is opened now, so a bad one stops the command before the run directory exists.
    rundata.check_images(data, progress=console.is_terminal)

    if config.amp and device.type != "cuda":
        console.print("[yellow]note:[/] --amp is ignored on the CPU (autocast is for CUDA here); training in float32")
    with open_run(device, console, run=run, amp=config.amp, channels_last=config.channels_last) as ctx:
        claim_run(ctx, run, resume, force)
        # CPU runs are reproducible to the bit (what the resume guarantee is checked against).
        with algorithm_settings(ctx.device, deterministic_cpu=True):
            return _train(config, split, dataset, run, ctx, checkpoint, model, weights_spec, data, model_factory,
                          command, track)


def _train(config, split, dataset, run: RunDir, ctx: RunContext, checkpoint, model, weights_spec, data,
           model_factory, command, track=None) -> FinetuneResult:
    classes = list(split.classes)
    num_classes = len(classes)
    if ctx.is_main and weights_spec["spec"] == "none":
        ctx.console.print(FROM_SCRATCH_WARNING, soft_wrap=True)

    class_weights = None
    sampler_weights = None
    if config.balance == "weights":
        class_weights = rundata.inverse_frequency_weights(data.train, num_classes)
    elif config.balance == "sampler":
        sampler_weights = rundata.sample_weights(data.train, num_classes)
    criterion = nn.CrossEntropyLoss(
        weight=None if class_weights is None else class_weights.to(ctx.device), label_smoothing=config.label_smoothing
    )

    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = ctx.grad_scaler()

    history: list[dict] = []
    best_val_loss = math.inf
    best_epoch = 0
    stopped_early = False
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"])
        history = list(checkpoint["history"])
        best_val_loss = float(checkpoint["best_val_loss"])
        best_epoch = int(checkpoint["best_epoch"])
        stopped_early = bool(checkpoint["stopped_early"])
        if ctx.is_main:
            ctx.console.print(f"resuming '{run.path}' after epoch {checkpoint['epoch']} of {config.epochs}")

    # With --ema, an average of the weights is what is validated, kept as best.pt and evaluated.
    ema = None
    if config.ema_decay is not None:
        ema = make_ema(model, config.ema_decay)
        if checkpoint is not None:
            ema.load_state_dict(checkpoint["ema"])
        steps = config.epochs * math.ceil(len(data.train) / (config.batch_size * ctx.dist.world_size))
        if ctx.is_main and horizon_steps(config.ema_decay) > steps:
            ctx.console.print(
                f"[yellow]note:[/] --ema {config.ema_decay} averages over about {horizon_steps(config.ema_decay):.0f} "
                f"steps but the run has about {steps}; the average stays close to the starting weights",
                soft_wrap=True,
            )

    run_config = {
        "recipe": config.to_dict(),
        "model": config.model,
        "dataset": dataset,
        "classes": classes,
        "ordinal": bool(split.ordinal),
        "split": {"path": str(split.csv_path), "absolute_path": str(Path(split.csv_path).resolve()), "sha256": split.sha256},
        "data_root": str(data.train.root),
        "weights": weights_spec,
        "distributed": {"world_size": ctx.dist.world_size, "batch_size_per_process": config.batch_size},
        "device": str(ctx.device),
        "amp_dtype": ctx.amp_name,
        "model_factory": None if model_factory is None else getattr(model_factory, "__qualname__", repr(model_factory)),
    }

    # The compiled module (when asked) serves evaluation too; DDP wraps it for training only.
    fast_model: nn.Module = torch.compile(model) if config.compile else model
    train_model = ctx.wrap_for_training(fast_model)

    def state(epoch: int) -> dict[str, Any]:
        return training_state("finetune", model=model, optimizer=optimizer, scaler=scaler, epoch=epoch,
                              config=config.to_dict(), classes=classes, history=history, split_sha256=split.sha256,
                              best_val_loss=best_val_loss, best_epoch=best_epoch, stopped_early=stopped_early,
                              **({} if ema is None else {"ema": ema.state_dict()}))

    def best_state(epoch: int) -> dict[str, Any]:
        # best.pt: the weights that were validated (the EMA's with --ema, under the model's keys) and
        # the bookkeeping, without what only resuming needs.
        kept = {k: v for k, v in state(epoch).items() if k not in ("optimizer", "scaler", "rng", "ema")}
        if ema is not None:
            kept["model"] = ema.module.state_dict()
        return kept

    recorder = RunRecorder(run, ctx, HISTORY_COLUMNS, history)
    recorder.start(run_config, lambda: state(0), resumed=checkpoint is not None, command=command)
    tracker = open_tracker(track, run.path, ctx.is_main)
    tracker.on_fit_start(read_run_config(run.path) if ctx.is_main else {})
    with recorder.stops(config.lr, clip_hint="clip_grad_norm in --config", best_epoch=lambda: best_epoch):
        for epoch in range(len(history) + 1, config.epochs + 1):
            if stopped_early:
                break
            row = _run_epoch(train_model, fast_model, data, config, epoch, ctx, criterion, optimizer, scaler,
                             sampler_weights, ema)
            improved = row["val_loss"] < best_val_loss
            if improved:
                best_val_loss, best_epoch = row["val_loss"], epoch
            if config.patience is not None and epoch - best_epoch >= config.patience:
                stopped_early = True
            recorder.end_epoch(row, lambda: state(epoch), _summary_line(row, config.epochs, improved, stopped_early),
                               best=(lambda: best_state(epoch)) if improved else None)
            tracker.on_epoch_end(row)

    if not run.best.is_file():  # every validation loss was NaN: no weights to report
        raise TrainingDiverged(
            f"training diverged: no epoch gave a finite validation loss, so there is no best.pt; '{run.last}' "
            f"keeps epoch {len(history)}; try a lower --lr (now {config.lr:g}) or --no-amp"
        )
    # The reported numbers come from the best-validation-loss weights, as in the paper.
    best = load_checkpoint(run.best)
    model.load_state_dict(best["model"])
    outputs = {}
    for part in ("val", "test"):
        outputs[part] = evaluate_part(fast_model, data.part(part), config, ctx, criterion, part)
    metrics = {}
    if ctx.is_main:
        metrics = write_final_outputs(run, outputs, classes, bool(split.ordinal), checkpoint="best", epoch=best_epoch)
        tracker.on_fit_end(metrics, [run.path / name for name in TRACKED_FILES])
        ctx.console.print(
            f"best epoch {best_epoch} (val loss {best_val_loss:.4f}); test accuracy {metrics['accuracy']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}; run directory '{run.path}'",
            soft_wrap=True,
        )
    metrics = broadcast_object(ctx.dist, metrics)
    return FinetuneResult(run.path, metrics, best_epoch, history)


def _run_epoch(train_model, eval_model, data, config, epoch, ctx: RunContext, criterion, optimizer, scaler,
               sampler_weights, ema=None) -> dict:
    # Every epoch's randomness comes from (seed, epoch) alone: resuming reproduces it exactly.
    seed_everything(epoch_seed(config.seed, epoch) + 7919 * ctx.dist.rank)
    world = ctx.dist.world_size
    loader = rundata.train_loader(data, config, epoch, ctx.dist, ctx.device.type == "cuda", sampler_weights)
    started = time.perf_counter()
    with ctx.progress(f"epoch {epoch}/{config.epochs} train", len(loader.sampler) * world) as bar:
        totals = train_one_epoch(train_model, loader, criterion, optimizer, scaler, ctx, config.clip_grad_norm,
                                 on_batch=lambda n, loss: _after_step(bar, n * world, loss, train_model, ema))
    train_seconds = time.perf_counter() - started
    val = evaluate_part(eval_model if ema is None else ema.module, data.val, config, ctx, criterion,
                        f"epoch {epoch}/{config.epochs} val")
    return {
        "epoch": epoch,
        "train_loss": totals.loss,
        "train_acc": totals.accuracy,
        "val_loss": val.loss,
        "val_acc": val.accuracy,
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": totals.count / max(train_seconds, 1e-9),
        "epoch_seconds": time.perf_counter() - started,
    }


def _after_step(bar: EpochBar, images: int, loss: float, model: nn.Module, ema) -> None:
    if ema is not None:
        # DDP and torch.compile wrappers list the wrapped model's parameters and buffers in its order.
        ema.update_parameters(model)
    bar.advance(images, loss)


def _summary_line(row: dict, epochs: int, improved: bool, stopped_early: bool) -> str:
    line = (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  {row['images_per_s']:.1f} img/s  "
        f"{row['epoch_seconds']:.1f} s"
    )
    if improved:
        line += "  [green]best[/]"
    if stopped_early:
        line += "  [yellow]early stop[/]"
    return line
