"""One training epoch, one evaluation pass, and the per-epoch sample order.

Each epoch's randomness (sample order, augmentation, dropout) is drawn from generators seeded by
``(seed, epoch)`` alone, never from state carried over from earlier epochs. That is what makes a
run resumed after a kill finish with the same numbers as one never interrupted.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from accvit_med.training.context import RunContext
from accvit_med.training.distributed import DistContext, all_reduce_sum


def epoch_seed(seed: int, epoch: int) -> int:
    # A large odd multiplier keeps (seed, epoch) pairs from colliding for any realistic values.
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one process's randomness in one epoch, a function of (seed, epoch, rank) alone.

    Both tasks seed each epoch with it, and fine-tuning's data loader generator too: resuming
    after epoch N continues as an uninterrupted run would. The prime keeps ranks' streams apart.
    """
    return epoch_seed(seed, epoch) + 7919 * rank


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch for one epoch of one process (see :func:`rank_epoch_seed`)."""
    seed_everything(rank_epoch_seed(seed, epoch, rank))


def epoch_indices(
    num_samples: int,
    seed: int,
    epoch: int,
    ctx: DistContext,
    sample_weights: Optional[torch.Tensor] = None,
) -> list[int]:
    """This rank's share of the epoch's sample order (a permutation, or a weighted draw).

    The order is the same on every rank; it is padded by repeating its start to a multiple of the
    world size (as DistributedSampler does) so every rank takes the same number of steps.
    """
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    if sample_weights is None:
        order = torch.randperm(num_samples, generator=generator)
    else:
        order = torch.multinomial(sample_weights.double(), num_samples, replacement=True, generator=generator)
    total = math.ceil(num_samples / ctx.world_size) * ctx.world_size
    order = torch.cat([order, order[: total - num_samples]])
    return order[ctx.rank :: ctx.world_size].tolist()


def eval_indices(num_samples: int, ctx: DistContext) -> list[int]:
    """This rank's rows for evaluation: no padding, so gathered results cover each row once."""
    return list(range(ctx.rank, num_samples, ctx.world_size))


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite at ``step`` (1-based, within the epoch).

    Raised before the optimizer step, so the weights (and every checkpoint) stay finite.
    """

    def __init__(self, step: int, value: float):
        super().__init__(f"non-finite training loss {value} at step {step}")
        self.step = step
        self.value = value


def check_finite_loss(loss: torch.Tensor, step: int, ctx: DistContext) -> float:
    """The loss as a Python float; raise :class:`NonFiniteLoss` on every rank when any rank's is not finite."""
    value = float(loss.detach())
    bad = not math.isfinite(value)
    if ctx.enabled:  # every rank must stop at the same step, or the others wait forever
        bad = all_reduce_sum(ctx, [float(bad)])[0] > 0
    if bad:
        raise NonFiniteLoss(step, value)
    return value


class OptimizerStep:
    """The optimiser step both tasks take: the finite-loss check before backward (so no weight ever
    becomes NaN), a loss-scaled backward, clipping of the true (unscaled) gradients, the step.

    Args:
        optimizer, scaler: the run's optimiser and (fp16) gradient scaler.
        clip_grad_norm: clip the gradients' global norm to this (0 or None: no clipping).
        dist: the process group: a non-finite loss on any rank stops every rank at the same step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 clip_grad_norm: Optional[float], dist: DistContext):
        self.optimizer, self.scaler, self.clip_grad_norm, self.dist = optimizer, scaler, clip_grad_norm, dist

    def backward(self, loss: torch.Tensor, step: int, accumulated: int = 1) -> float:
        """Check ``loss`` (``step`` is 1-based, for the message), then backward ``loss / accumulated``;
        returns the loss as a float (the step's one device-to-host sync of it)."""
        value = check_finite_loss(loss, step, self.dist)
        self.scaler.scale(loss if accumulated == 1 else loss / accumulated).backward()
        return value

    def step(self, model: nn.Module) -> None:
        """Clip ``model``'s gradients, step the optimiser and the scaler, clear the gradients."""
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def cross_entropy(label_smoothing: float, class_weights: Optional[torch.Tensor] = None,
                  device: Optional[torch.device] = None) -> nn.CrossEntropyLoss:
    """The loss of both tasks: cross-entropy with label smoothing, optionally class-weighted."""
    weight = None if class_weights is None else class_weights.to(device) if device is not None else class_weights
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)


@dataclass
class EpochTotals:
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    criterion: nn.Module,
    step: OptimizerStep,
    ctx: RunContext,
    on_batch: Optional[Callable[[int, float], None]] = None,
    ema: Optional[nn.Module] = None,
) -> EpochTotals:
    """Train over ``batches``; after each step ``ema`` (an AveragedModel) follows ``model`` and
    ``on_batch(batch_size, running_loss)`` drives the progress bar."""
    model.train()
    totals = EpochTotals()
    step.optimizer.zero_grad(set_to_none=True)
    for index, (images, targets, _rows) in enumerate(batches, start=1):
        images = ctx.images(images)
        targets = targets.to(ctx.device, non_blocking=True)
        with ctx.autocast():
            logits = model(images)
            loss = criterion(logits, targets)
        loss_value = step.backward(loss, index)
        step.step(model)
        batch = targets.shape[0]
        totals.loss_sum += loss_value * batch
        totals.correct += int((logits.argmax(dim=1) == targets).sum().item())
        totals.count += batch
        if ema is not None:
            # DDP and torch.compile wrappers list the wrapped model's parameters and buffers in its order.
            ema.update_parameters(model)
        if on_batch is not None:
            on_batch(batch, totals.loss)
    loss_sum, correct, count = all_reduce_sum(ctx.dist, [totals.loss_sum, totals.correct, totals.count])
    return EpochTotals(loss_sum, int(correct), int(count))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    batches: Iterable,
    ctx: RunContext,
    on_batch: Optional[Callable[[int], None]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row indices, float32 logits on the CPU) for this process's rows."""
    model.eval()
    rows, outputs = [], []
    for images, _targets, batch_rows in batches:
        images = ctx.images(images)
        with ctx.autocast():
            logits = model(images)
        outputs.append(logits.float().cpu())
        rows.append(batch_rows.cpu())
        if on_batch is not None:
            on_batch(images.shape[0])
    if not outputs:
        return torch.empty(0, dtype=torch.long), torch.empty(0, 0)
    return torch.cat(rows), torch.cat(outputs)
