"""Fine-tune a model on a split and leave a run directory a reviewer can trust.

:func:`finetune` is the whole job (the CLI command ``accvit-med finetune`` only parses options);
:class:`FinetuneRun` is the same job in steps: :meth:`~FinetuneRun.prepare` (every check that can
fail, before the run directory exists), then within :meth:`~FinetuneRun.session`,
:meth:`~FinetuneRun.fit` (checkpoint every epoch, atomic and resumable; keep the best-validation-loss
weights) and :meth:`~FinetuneRun.evaluate` (those weights on val and test). What training carries
from epoch to epoch is a :class:`~accvit_med.training.train_state.TrainState`; handlers
(``callbacks``, where experiment tracking plugs in) are described by
:class:`~accvit_med.training.train_state.FinetuneCallback`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from rich.console import Console
from torch import nn

from accvit_med.datasets.dicom import check_run_window, user_window
from accvit_med.datasets.transforms import Normalisation
from accvit_med.devices import resolve_device
from accvit_med.errors import TrainingDiverged, UserError
from accvit_med.rundir.checkpoints import check_classes, load_checkpoint, training_state
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord, SplitRef
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.distributed import broadcast_object
from accvit_med.training.ema import make_ema, short_horizon_note
from accvit_med.training.engine import RunRecorder, algorithm_settings, check_start, claim_run, open_run
from accvit_med.training.loop import OptimizerStep, seed_epoch, seed_everything, train_one_epoch
from accvit_med.training.model_setup import FROM_SCRATCH_WARNING, build_model, check_model_choice, head_reuse_warning
from accvit_med.training.part_predictions import evaluate_part, write_final_outputs
from accvit_med.training.recipe import FinetuneConfig
from accvit_med.training.run_config import continued_config, requested_config, resolve_run_path, resumed_config
from accvit_med.training.run_split import load_run_split
from accvit_med.training.train_state import HISTORY_COLUMNS, FinetuneCallback, TrainState, summary_line

__all__ = ["HISTORY_COLUMNS", "FinetuneCallback", "FinetuneResult", "FinetuneRun", "TrainState", "finetune",
           "requested_config", "resolve_run_path", "resumed_config"]

# A model factory builds a network for a number of classes; library users and tests may pass one
# instead of a registry name (config.model is then only a label).
ModelFactory = Callable[[int], nn.Module]


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict
    best_epoch: int
    history: list[dict]


def finetune(
    config: FinetuneConfig,
    *,
    model_factory: Optional[ModelFactory] = None,
    callbacks: Sequence[Any] = (),
    command: Optional[list[str]] = None,
    console: Optional[Console] = None,
    track: Optional[str] = None,
    **options: Any,
) -> FinetuneResult:
    """Run (or resume) one fine-tuning run; returns its directory and test metrics.

    Args:
        config: data, recipe and run options (:class:`FinetuneConfig`; ``FinetuneConfig.of(recipe,
            data, options)`` joins the three groups). On resume the run's stored recipe must match
            it, but for ``epochs`` and ``patience``; the run options are today's.
        model_factory: builds the network for a number of classes instead of the registry model.
        callbacks: handlers of the run (see :class:`FinetuneCallback`).
        command: the command line config.json records (default ``sys.argv``).
        console: where progress and messages go (default stderr).
        track: also send the run to ``tensorboard`` or ``mlflow`` (:mod:`accvit_med.tracking`).
        options: :class:`~accvit_med.training.recipe.RunOptions` fields that replace config's
            (``out``, ``name``, ``resume``, ``force``, ``device``, ...).
    """
    if track is not None:
        from accvit_med.tracking.callback import TrackingCallback

        callbacks = [*callbacks, TrackingCallback(track)]  # checks the name and the package now
    run = FinetuneRun(replace(config, **options), model_factory=model_factory, callbacks=callbacks,
                      command=command, console=console)
    run.prepare()
    with run.session():
        run.fit()
        return run.evaluate()


class FinetuneRun:
    """One fine-tuning run: ``prepare()``, then inside ``session()``, ``fit()`` and ``evaluate()``."""

    def __init__(self, config: FinetuneConfig, *, model_factory: Optional[ModelFactory] = None,
                 callbacks: Sequence[Any] = (), command: Optional[list[str]] = None,
                 console: Optional[Console] = None):
        self.config = config.validate()
        self.model_factory = model_factory
        self.callbacks = list(callbacks)
        self.command = command
        self.console = console or Console(stderr=True)
        self.ctx: Optional[RunContext] = None
        self.state: Optional[TrainState] = None

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(*args)

    def prepare(self) -> "FinetuneRun":
        """Every check that can fail, before the run directory is touched: a mistake leaves nothing.

        The run folder (resume/force), the recipe (a resumed run's own), the split (read once), the
        model choice, the classes and split of a resumed run, the model and its weights (read
        once), and every image of the split (opened once now, so a bad one stops the command here).
        """
        config = self.config
        split = None
        if not config.out and not config.dataset:
            split = load_run_split(config)
        self.run = RunDir(resolve_run_path(config, lambda: split.manifest.get("dataset")))
        self.checkpoint = check_start(self.run, config.resume, config.force, "finetune")
        if self.checkpoint is not None:
            config = self.config = continued_config(config, self.checkpoint["config"])
        self.split = split if split is not None else load_run_split(config)
        if self.model_factory is None:
            check_model_choice(config)
        if self.checkpoint is not None:
            if self.run.config_file.is_file():
                check_run_window(self.run.record().dicom_window, self.run.path)
            check_classes(self.checkpoint["classes"], self.split.classes, f"run '{self.run.path}'")
            if self.checkpoint["split_sha256"] != self.split.sha256:
                raise UserError(
                    f"split '{self.split.csv_path}' changed since run '{self.run.path}' started (sha256 differs); "
                    "resume with the original split or pass --force to start again"
                )
        self._emit("on_recipe", config, self.checkpoint is not None)
        self.device = resolve_device(config.device)
        seed_everything(config.seed)  # the new head's initial weights
        self.model, self.weights_spec = build_model(config, len(self.split.classes), self.model_factory)
        reused = head_reuse_warning(config.weights, list(self.split.classes)) if self.model_factory is None else None
        if reused:
            self.console.print(reused, markup=False, soft_wrap=True)
        # The statistics the starting weights were trained with (a zoo model's own, else ImageNet's).
        normalisation = Normalisation.of_weights(self.weights_spec)
        self.data = rundata.build_run_data(self.split, config, normalisation=normalisation)
        rundata.check_images(self.data, progress=self.console.is_terminal)
        if config.amp and self.device.type != "cuda":
            self.console.print("[yellow]note:[/] --amp is ignored on the CPU (autocast is for CUDA here); "
                               "training in float32")
        return self

    @contextlib.contextmanager
    def session(self) -> Iterator[RunContext]:
        """The device and process group set up, the run folder claimed and locked; undone after."""
        config = self.config
        with open_run(self.device, self.console, run=self.run, amp=config.amp,
                      channels_last=config.channels_last) as ctx:
            claim_run(ctx, self.run, config.resume, config.force)
            # CPU runs are reproducible to the bit (what the resume guarantee is checked against).
            with algorithm_settings(ctx.device, deterministic_cpu=True):
                self.ctx = ctx
                try:
                    yield ctx
                finally:
                    self.ctx = None

    def _setup(self) -> None:
        """The state (restored on resume), the loss and the compiled/wrapped modules."""
        config, ctx, model = self.config, self.ctx, self.model
        if ctx.is_main and self.weights_spec["spec"] == "none":
            ctx.console.print(FROM_SCRATCH_WARNING, soft_wrap=True)
        num_classes = len(self.split.classes)
        self.sampler_weights = (rundata.sample_weights(self.data.train, num_classes)
                                if config.balance == "sampler" else None)
        self.criterion = rundata.finetune_criterion(config, self.data.train, num_classes, ctx.device)
        model.to(ctx.device)
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        # With --ema, an average of the weights is what is validated, kept as best.pt and evaluated.
        ema = make_ema(model, config.ema_decay) if config.ema_decay is not None else None
        self.state = TrainState(model, optimizer, ctx.grad_scaler(), ema)
        if self.checkpoint is not None:
            self.state.load_state_dict(self.checkpoint)
            if ctx.is_main:
                ctx.console.print(f"resuming '{self.run.path}' after epoch {self.checkpoint['epoch']} "
                                  f"of {config.epochs}")
        if ema is not None and ctx.is_main:
            steps = config.epochs * math.ceil(len(self.data.train) / (config.batch_size * ctx.dist.world_size))
            note = short_horizon_note(config.ema_decay, steps)
            if note:
                ctx.console.print(note, soft_wrap=True)
        # The compiled module (when asked) serves evaluation too; DDP wraps it for training only.
        self.fast_model: nn.Module = torch.compile(model) if config.compile else model
        self.train_model = ctx.wrap_for_training(self.fast_model)

    def record(self) -> RunRecord:
        """config.json of this run (the recorder adds versions and the command)."""
        config, ctx, split = self.config, self.ctx, self.split
        dataset = config.dataset or str(split.manifest.get("dataset", "custom"))
        factory = self.model_factory
        return RunRecord(
            task="finetune", recipe=config, model=config.model, dataset=dataset, classes=tuple(split.classes),
            ordinal=bool(split.ordinal),
            split=SplitRef(str(split.csv_path), str(Path(split.csv_path).resolve()), split.sha256),
            data_root=str(self.data.train.root), weights=self.weights_spec,
            distributed={"world_size": ctx.dist.world_size, "batch_size_per_process": config.batch_size},
            device=str(ctx.device), amp_dtype=ctx.amp_name,
            model_factory=None if factory is None else getattr(factory, "__qualname__", repr(factory)),
            dicom_window=user_window(),
        )

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """last.pt after ``epoch`` (schema: :mod:`accvit_med.rundir.checkpoints`)."""
        state = self.state.state_dict()
        return training_state("finetune", model=self.state.model, optimizer=self.state.optimizer,
                              scaler=self.state.scaler, epoch=epoch, config=self.config.to_dict(),
                              classes=list(self.split.classes), history=self.state.history,
                              split_sha256=self.split.sha256,
                              **{k: v for k, v in state.items()
                                 if k not in ("model", "optimizer", "scaler", "history")})

    def best_state(self, epoch: int) -> dict[str, Any]:
        """best.pt: the weights that were validated (the EMA's with --ema, under the model's keys)
        and the bookkeeping, without what only resuming needs."""
        kept = {k: v for k, v in self.checkpoint_state(epoch).items() if k not in ("optimizer", "scaler", "rng", "ema")}
        if self.state.ema is not None:
            kept["model"] = self.state.ema.module.state_dict()
        return kept

    def fit(self) -> list[dict]:
        """Train the remaining epochs (saving last.pt, best.pt and history.csv after each); the history."""
        self._setup()
        config, state = self.config, self.state
        recorder = RunRecorder(self.run, self.ctx, HISTORY_COLUMNS, state.history)
        recorder.start(self.record(), lambda: self.checkpoint_state(0), resumed=self.checkpoint is not None,
                       command=self.command)
        if self.ctx.is_main:
            self._emit("on_fit_start", self.run)
        step = OptimizerStep(state.optimizer, state.scaler, config.clip_grad_norm, self.ctx.dist)
        with recorder.stops(config.lr, clip_hint="clip_grad_norm in --config", best_epoch=lambda: state.best_epoch):
            for epoch in range(state.epochs_done + 1, config.epochs + 1):
                if state.stopped_early:
                    break
                row = self._run_epoch(epoch, step)
                improved = state.end_epoch(row, config.patience)
                recorder.end_epoch(row, lambda: self.checkpoint_state(epoch),
                                   summary_line(row, config.epochs, improved, state.stopped_early),
                                   best=(lambda: self.best_state(epoch)) if improved else None)
                if self.ctx.is_main:
                    self._emit("on_epoch_end", row, state)
        return state.history

    def _run_epoch(self, epoch: int, step: OptimizerStep) -> dict:
        config, ctx, state = self.config, self.ctx, self.state
        # Every epoch's randomness comes from (seed, epoch) alone: resuming reproduces it exactly.
        seed_epoch(config.seed, epoch, ctx.dist.rank)
        world = ctx.dist.world_size
        loader = rundata.train_loader(self.data, config, epoch, ctx.dist, ctx.device.type == "cuda",
                                      self.sampler_weights)
        started = time.perf_counter()
        with ctx.progress(f"epoch {epoch}/{config.epochs} train", len(loader.sampler) * world) as bar:
            totals = train_one_epoch(self.train_model, loader, self.criterion, step, ctx,
                                     on_batch=lambda n, loss: bar.advance(n * world, loss), ema=state.ema)
        train_seconds = time.perf_counter() - started
        val = evaluate_part(self.fast_model if state.ema is None else state.ema.module, self.data.val, config, ctx,
                            self.criterion, f"epoch {epoch}/{config.epochs} val")
        return {
            "epoch": epoch,
            "train_loss": totals.loss,
            "train_acc": totals.accuracy,
            "val_loss": val.loss,
            "val_acc": val.accuracy,
            # For trackers (TensorBoard, MLflow); history.csv keeps its columns (HISTORY_COLUMNS).
            "val_macro_f1": val.macro_f1,
            "lr": state.optimizer.param_groups[0]["lr"],
            "images_per_s": totals.count / max(train_seconds, 1e-9),
            "epoch_seconds": time.perf_counter() - started,
        }

    def evaluate(self) -> FinetuneResult:
        """Score the best-validation-loss weights (as in the paper) on val and test; write their files."""
        config, ctx, state, run = self.config, self.ctx, self.state, self.run
        if not run.best.is_file():  # every validation loss was NaN: no weights to report
            raise TrainingDiverged(
                f"training diverged: no epoch gave a finite validation loss, so there is no best.pt; '{run.last}' "
                f"keeps epoch {state.epochs_done}; try a lower --lr (now {config.lr:g}) or --no-amp"
            )
        best = load_checkpoint(run.best)
        state.model.load_state_dict(best["model"])
        outputs = {part: evaluate_part(self.fast_model, self.data.part(part), config, ctx, self.criterion, part)
                   for part in ("val", "test")}
        metrics = {}
        if ctx.is_main:
            metrics = write_final_outputs(run, outputs, list(self.split.classes), bool(self.split.ordinal),
                                          checkpoint="best", epoch=state.best_epoch)
            ctx.console.print(
                f"best epoch {state.best_epoch} (val loss {state.best_val_loss:.4f}); test accuracy "
                f"{metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}; run directory '{run.path}'",
                soft_wrap=True,
            )
            self._emit("on_fit_end", metrics)
        metrics = broadcast_object(ctx.dist, metrics)
        return FinetuneResult(run.path, metrics, state.best_epoch, state.history)
