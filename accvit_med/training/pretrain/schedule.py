"""Learning rate: linear warm-up, then cosine annealing to a floor, evaluated at every optimizer step.

torchvision's reference chains ``LinearLR(start_factor=warmup_decay, total_iters=W)`` and
``CosineAnnealingLR(T_max=E - W, eta_min=min_lr)`` and steps them once per epoch. We evaluate the
same curve at fractional epochs ``step / steps_per_epoch`` instead: at whole epochs it gives
torchvision's values exactly, in between it moves smoothly rather than in 400 steps. Being a pure
function of the step, it needs no scheduler state in checkpoints and resumes exactly.
"""

from __future__ import annotations

import math


def lr_at(
    epoch: float,
    *,
    base_lr: float,
    min_lr: float,
    epochs: int,
    warmup_epochs: int,
    warmup_decay: float,
) -> float:
    """The learning rate at (fractional) ``epoch`` in ``[0, epochs]``."""
    if epoch < warmup_epochs:
        # Linear from base_lr * warmup_decay at epoch 0 towards base_lr at the end of warm-up.
        return base_lr * (warmup_decay + (1.0 - warmup_decay) * epoch / warmup_epochs)
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
