"""What fine-tuning carries from epoch to epoch (:class:`TrainState`) and the handlers that follow a run.

Handlers (``callbacks`` of :class:`accvit_med.training.finetune.FinetuneRun`) follow a run as
MONAI's event handlers follow an engine, without touching the loop: any object with some of the
methods of :class:`FinetuneCallback`. Experiment tracking (TensorBoard, MLflow) plugs in there:
``on_epoch_end`` gets each history row and the state, ``on_fit_end`` the test metrics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import nn

from accvit_med.rundir.checkpoints import restore_rng_state
from accvit_med.training.ema import ExponentialMovingAverage
from accvit_med.training.recipe import FinetuneConfig

if TYPE_CHECKING:
    from accvit_med.rundir.layout import RunDir

# history.csv's columns: one row per completed epoch.
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_seconds")

class FinetuneCallback:
    """What a handler of a fine-tuning run may implement (every method is optional).

    - ``on_recipe(config, resuming)``: the final recipe, before the model is built (the CLI prints it);
    - ``on_fit_start(run)``: the :class:`~accvit_med.rundir.layout.RunDir` once config.json is
      written, before the first epoch, rank 0 only;
    - ``on_epoch_end(row, state)``: after each epoch is saved, rank 0 only; ``row`` is its history
      line, ``state`` the :class:`TrainState` (weights, optimizer, best epoch so far);
    - ``on_fit_end(metrics)``: the test metrics of the best checkpoint, rank 0 only.
    """

    def on_recipe(self, config: FinetuneConfig, resuming: bool) -> None: ...

    def on_fit_start(self, run: "RunDir") -> None: ...

    def on_epoch_end(self, row: dict, state: "TrainState") -> None: ...

    def on_fit_end(self, metrics: dict) -> None: ...


class TrainState:
    """What fine-tuning carries from epoch to epoch: the model, optimizer, scaler, EMA, the best
    validation loss and its epoch, the early-stop flag and the history. :meth:`state_dict` is what
    last.pt keeps of it (with the RNG states); :meth:`load_state_dict` resumes from it."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 ema: Optional[ExponentialMovingAverage] = None):
        self.model, self.optimizer, self.scaler, self.ema = model, optimizer, scaler, ema
        self.best_val_loss = math.inf
        self.best_epoch = 0
        self.stopped_early = False
        self.history: list[dict] = []

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    @property
    def validated(self) -> nn.Module:
        """The weights validation, best.pt and the final evaluation use: the EMA's with --ema."""
        return self.model if self.ema is None else self.ema.module

    def end_epoch(self, row: dict, patience: Optional[int]) -> bool:
        """Account for a finished epoch (appended to the history by the recorder); True if it is the best."""
        improved = row["val_loss"] < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch = row["val_loss"], row["epoch"]
        if patience is not None and row["epoch"] - self.best_epoch >= patience:
            self.stopped_early = True
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The state as last.pt stores it (see :mod:`accvit_med.rundir.checkpoints`), RNG states excepted."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "history": self.history,
                 "best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch,
                 "stopped_early": self.stopped_early}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a last.pt: weights, optimizer, scaler, RNG states, EMA and bookkeeping."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.history = list(state["history"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.stopped_early = bool(state["stopped_early"])


def summary_line(row: dict, epochs: int, improved: bool, stopped_early: bool) -> str:
    """The line printed after each epoch."""
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
