"""Fine-tune a model on a split and leave a run directory a reviewer can trust.

:func:`finetune` is the whole job: read the split, build the model, train with the recipe,
checkpoint every epoch (atomic, resumable), keep the best-validation-loss weights, and finally
evaluate those on val and test. The CLI command ``accvit-med finetune`` only parses options.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from rich.console import Console
from torch import nn

from accvit_med.errors import TrainingDiverged, UserError
from accvit_med.fileio import atomic_write_json, atomic_write_text, check_writable
from accvit_med.training import data as rundata
from accvit_med.rundir.checkpoints import (
    capture_rng_state,
    check_classes,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from accvit_med.training.distributed import (
    DistContext,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from accvit_med.training.ema import horizon_steps, make_ema
from accvit_med.training.part_predictions import evaluate_part, write_final_outputs
from accvit_med.training.loop import NonFiniteLoss, epoch_seed, seed_everything, train_one_epoch
from accvit_med.training.model_setup import (FROM_SCRATCH_WARNING, build_model, check_model_choice, head_reuse_warning,
                                           resolve_device)
from accvit_med.progress import EpochBar
from accvit_med.training.recipe import RESUMABLE_CHANGES, FinetuneConfig, stored_recipe
from accvit_med.rundir.claim import RunDir, check_run_dir, default_run_path, prepare_run_dir, release_run_dir
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


def _history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in HISTORY_COLUMNS})
    return buffer.getvalue()


def _amp_dtype(config: FinetuneConfig, device: torch.device, console: Console) -> Optional[torch.dtype]:
    if not config.amp:
        return None
    if device.type != "cuda":
        console.print("[yellow]note:[/] --amp is ignored on the CPU (autocast is for CUDA here); training in float32")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
) -> FinetuneResult:
    """Run (or resume) one fine-tuning run; returns its directory and test metrics.

    ``explicit`` names the fields the user set (on resume, the stored recipe fills the others);
    None means all of ``config``. ``on_recipe(config, resuming)`` receives the final recipe
    before training starts (the CLI prints it).
    """
    console = console or Console(stderr=True)
    run_path = resolve_run_path(config, out, name)
    checkpoint = None
    check_writable(run_path)
    check_run_dir(run_path, resume=resume, force=force)
    if resume:
        checkpoint = load_checkpoint(RunDir(run_path).last)
        config = merge_resumed_config(checkpoint["config"], config, explicit)
    split = load_run_split(config)
    if model_factory is None:
        check_model_choice(config)
    dataset = config.dataset or str(split.manifest.get("dataset", "custom"))
    if checkpoint is not None:
        check_classes(checkpoint["classes"], split.classes, f"run '{run_path}'")
        if checkpoint["split_sha256"] != split.sha256:
            raise UserError(
                f"split '{split.csv_path}' changed since run '{run_path}' started (sha256 differs); "
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

    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    try:
        # Rank 0 alone touches the folder; its verdict goes to every rank so none waits forever.
        refusal = None
        if ctx.is_main:
            try:
                prepare_run_dir(run_path, resume=resume, force=force)
            except UserError as err:
                refusal = str(err)
        refusal = broadcast_object(ctx, refusal)
        if refusal is not None:
            raise UserError(refusal)
        with _algorithm_settings(device):
            return _train(config, split, dataset, RunDir(run_path), ctx, device, checkpoint, model, weights_spec,
                          data, model_factory, command, console)
    finally:
        release_run_dir(run_path)
        shutdown_distributed(ctx)


@contextlib.contextmanager
def _algorithm_settings(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on the CPU, cuDNN autotuning on CUDA; the caller's settings after."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if device.type == "cpu":
        # CPU runs are reproducible to the bit (what the resume guarantee is checked against).
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True  # speed first on GPUs; CUDA runs are not bitwise reproducible
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def _train(config, split, dataset, run: RunDir, ctx: DistContext, device, checkpoint, model, weights_spec, data,
           model_factory, command, console) -> FinetuneResult:
    classes = list(split.classes)
    num_classes = len(classes)
    if ctx.is_main and weights_spec["spec"] == "none":
        console.print(FROM_SCRATCH_WARNING, soft_wrap=True)
    pin_memory = device.type == "cuda"

    class_weights = None
    sampler_weights = None
    if config.balance == "weights":
        class_weights = rundata.inverse_frequency_weights(data.train, num_classes)
    elif config.balance == "sampler":
        sampler_weights = rundata.sample_weights(data.train, num_classes)
    criterion = nn.CrossEntropyLoss(
        weight=None if class_weights is None else class_weights.to(device), label_smoothing=config.label_smoothing
    )

    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    amp_dtype = _amp_dtype(config, device, console)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

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
            console.print(f"resuming '{run.path}' after epoch {checkpoint['epoch']} of {config.epochs}")

    # With --ema, an average of the weights is what is validated, kept as best.pt and evaluated.
    ema = None
    if config.ema_decay is not None:
        ema = make_ema(model, config.ema_decay)
        if checkpoint is not None:
            ema.load_state_dict(checkpoint["ema"])
        steps = config.epochs * math.ceil(len(data.train) / (config.batch_size * ctx.world_size))
        if ctx.is_main and horizon_steps(config.ema_decay) > steps:
            console.print(
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
        "distributed": {"world_size": ctx.world_size, "batch_size_per_process": config.batch_size},
        "device": str(device),
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "versions": _versions(),
        "command": command if command is not None else list(sys.argv),
        "model_factory": None if model_factory is None else getattr(model_factory, "__qualname__", repr(model_factory)),
    }

    if checkpoint is not None and run.config.is_file():
        # Keep the command that started the run; list the ones that resumed it.
        started = json.loads(run.config.read_text(encoding="utf-8"))
        run_config["resumed_by"] = started.get("resumed_by", []) + [run_config["command"]]
        run_config["command"] = started.get("command", run_config["command"])

    # The compiled module (when asked) serves evaluation too; DDP wraps it for training only.
    fast_model: nn.Module = torch.compile(model) if config.compile else model
    train_model: nn.Module = fast_model
    if ctx.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            fast_model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def state(epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "rng": capture_rng_state(),
            "config": config.to_dict(),
            "classes": classes,
            "split_sha256": split.sha256,
            "best_val_loss": best_val_loss,
            "best_epoch": best_epoch,
            "stopped_early": stopped_early,
            "history": history,
            **({} if ema is None else {"ema": ema.state_dict()}),
        }

    start_epoch = len(history) + 1
    if ctx.is_main:
        atomic_write_json(run.config, run_config)
        if checkpoint is None:
            # Epoch 0: an interruption during the first epoch still leaves something to resume.
            save_checkpoint(run.last, state(0))
            atomic_write_text(run.history, _history_csv(history))
    barrier(ctx)

    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            if stopped_early:
                break
            row = _run_epoch(train_model, fast_model, data, config, epoch, ctx, device, criterion, optimizer, scaler,
                             amp_dtype, sampler_weights, pin_memory, console, ema=ema)
            history.append(row)
            improved = row["val_loss"] < best_val_loss
            if improved:
                best_val_loss, best_epoch = row["val_loss"], epoch
            if config.patience is not None and epoch - best_epoch >= config.patience:
                stopped_early = True
            if ctx.is_main:
                if improved:
                    best_state = {k: v for k, v in state(epoch).items() if k not in ("optimizer", "scaler", "rng", "ema")}
                    if ema is not None:
                        best_state["model"] = ema.module.state_dict()  # same keys as the model's
                    save_checkpoint(run.best, best_state)
                save_checkpoint(run.last, state(epoch))
                atomic_write_text(run.history, _history_csv(history))
                console.print(_summary_line(row, config.epochs, improved, stopped_early), soft_wrap=True)
            barrier(ctx)
    except NonFiniteLoss as err:
        done = len(history)
        kept = f"'{run.last}' keeps epoch {done}, the last good one" + (
            f", '{run.best}' epoch {best_epoch}" if run.best.is_file() else "")
        raise TrainingDiverged(
            f"training diverged: the loss became {err.value} at epoch {epoch}, step {err.step}; stopped, {kept}; "
            f"try a lower --lr (now {config.lr:g}), --no-amp, or gradient clipping (clip_grad_norm in --config)"
        ) from None
    except KeyboardInterrupt:
        if ctx.is_main:
            done = len(history)
            console.print(
                f"[yellow]interrupted during epoch {done + 1}[/]: '{run.last}' holds epoch {done}; "
                f"continue with the same command plus --resume",
                soft_wrap=True,
            )
        raise

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
        outputs[part] = evaluate_part(fast_model, data.part(part), config, ctx, device, amp_dtype, criterion, console, part)
    metrics = {}
    if ctx.is_main:
        metrics = write_final_outputs(run, outputs, classes, bool(split.ordinal), checkpoint="best", epoch=best_epoch)
        console.print(
            f"best epoch {best_epoch} (val loss {best_val_loss:.4f}); test accuracy {metrics['accuracy']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f}; run directory '{run.path}'",
            soft_wrap=True,
        )
    metrics = broadcast_object(ctx, metrics)
    return FinetuneResult(run.path, metrics, best_epoch, history)


def _run_epoch(train_model, eval_model, data, config, epoch, ctx, device, criterion, optimizer, scaler, amp_dtype,
               sampler_weights, pin_memory, console, ema=None) -> dict:
    # Every epoch's randomness comes from (seed, epoch) alone: resuming reproduces it exactly.
    seed_everything(epoch_seed(config.seed, epoch) + 7919 * ctx.rank)
    loader = rundata.train_loader(data, config, epoch, ctx, pin_memory, sampler_weights)
    started = time.perf_counter()
    with EpochBar(console, f"epoch {epoch}/{config.epochs} train", len(loader.sampler) * ctx.world_size, ctx.is_main) as bar:
        totals = train_one_epoch(
            train_model, loader, criterion, optimizer, scaler, device, ctx, amp_dtype, config.clip_grad_norm,
            config.channels_last, on_batch=lambda n, loss: _after_step(bar, n * ctx.world_size, loss, train_model, ema),
        )
    train_seconds = time.perf_counter() - started
    val = evaluate_part(eval_model if ema is None else ema.module, data.val, config, ctx, device, amp_dtype, criterion, console, f"epoch {epoch}/{config.epochs} val")
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


def _versions() -> dict[str, str]:
    from accvit_med.env import environment_summary

    return environment_summary()
