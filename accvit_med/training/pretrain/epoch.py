"""What pre-training carries from epoch to epoch (:class:`PretrainState`, last.pt's content) and one
epoch: optimizer steps over accumulated micro-batches, the per-step learning rate, mixup/cutmix,
distillation and the EMA cadence (see :mod:`.engine` for the run around it)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from accvit_med.training.context import RunContext
from accvit_med.training.distributed import all_reduce_sum
from accvit_med.training.ema import ExponentialMovingAverage
from accvit_med.training.loop import OptimizerStep
from accvit_med.training.pretrain.distill import distillation_loss
from accvit_med.training.pretrain.mixing import MixupCutmix
from accvit_med.training.pretrain.recipe import BatchLayout, PretrainRecipe
from accvit_med.training.pretrain.schedule import lr_at, set_lr


class PretrainState:
    """What pre-training carries from epoch to epoch: model, optimizer, scaler, EMA, history and the
    optimizer steps so far. :meth:`state_dict` is what last.pt keeps of it (with the RNG states)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 ema: Optional[ExponentialMovingAverage]):
        self.model, self.optimizer, self.scaler, self.ema = model, optimizer, scaler, ema
        self.history: list[dict] = []
        self.global_step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "history": self.history,
                "model_ema": None if self.ema is None else self.ema.weights(),
                "model_ema_updates": 0 if self.ema is None else int(self.ema.n_averaged),
                "global_step": self.global_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when saved without fp16 loss scaling (CPU, bf16)
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model_ema"])
            self.ema.n_averaged.fill_(int(state["model_ema_updates"]))
        self.history = list(state["history"])
        self.global_step = int(state["global_step"])

    @property
    def scored(self) -> nn.Module:
        """The weights best.pt is chosen by and best_weights.safetensors holds: the EMA's if any."""
        return self.model if self.ema is None else self.ema.module


@dataclass
class TrainStep:
    """What an optimizer step of pre-training uses (the modules, the loss and the recipe's numbers)."""

    train_model: nn.Module  # DDP-wrapped under torchrun
    model: nn.Module  # the plain model the EMA follows
    ema: Optional[ExponentialMovingAverage]
    mixer: MixupCutmix
    criterion: nn.Module
    optimizer_step: OptimizerStep
    recipe: PretrainRecipe
    layout: BatchLayout
    steps_per_epoch: int
    teacher: Optional[nn.Module] = None  # distillation: the loss is distill.distillation_loss


def train_epoch(step: TrainStep, loader: DataLoader, epoch: int, global_step: int,
                 ctx: RunContext) -> tuple[float, int]:
    """One epoch of optimizer steps, each over ``accumulation_steps`` micro-batches; returns (mean loss, images).

    With a teacher the loss is :func:`.distill.distillation_loss` on the same (mixed) images."""
    recipe, layout, optimizer = step.recipe, step.layout, step.optimizer_step.optimizer
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
                value = step.optimizer_step.backward(loss, micro + 1, accumulated=group_size)
            loss_sum += value * labels.shape[0]
            images += labels.shape[0]
            bar.advance(labels.shape[0] * world, loss_sum / images)
            if not last_in_group:
                continue
            step.optimizer_step.step(train_model)
            step_in_epoch += 1
            if step.ema is not None and (global_step + step_in_epoch) % recipe.ema_steps == 0:
                step.ema.update_parameters(step.model)
                if epoch <= recipe.warmup_epochs:
                    step.ema.restart()  # during warm-up the EMA keeps copying the weights, as torchvision
    loss_sum, images = all_reduce_sum(ctx.dist, [loss_sum, images])
    return loss_sum / max(images, 1.0), int(images)
