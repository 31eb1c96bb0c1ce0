"""Validation of a pre-training model: loss, top-1 and top-5 over the val folder, each image once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from accvit_med.training.context import RunContext
from accvit_med.training.distributed import DistContext, all_reduce_sum
from accvit_med.training.loop import eval_indices


@dataclass(frozen=True)
class Metrics:
    loss: Optional[float]  # None: no labels (a distillation run on unlabelled images)
    top1: Optional[float]
    top5: Optional[float]
    images: int
    agreement: Optional[float] = None  # % of images where student and teacher agree on the top class


def val_loader(val_set, ctx: DistContext, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    # An unpadded shard per rank: summed counts cover each val image exactly once.
    shard = Subset(val_set, eval_indices(len(val_set), ctx))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)


@torch.no_grad()
def evaluate_topk(model: nn.Module, loader: DataLoader, ctx: RunContext, num_classes: int, description: str,
                  teacher: Optional[nn.Module] = None, labelled: bool = True) -> Metrics:
    """Loss, top-1 and top-5 (top-k with k = min(5, classes)) over every process's share of ``loader``;
    with a ``teacher``, also the top-1 agreement with it; without labels, only that agreement."""
    model.eval()
    k = min(5, num_classes)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = correct1 = correct5 = agree = count = 0.0
    world = ctx.dist.world_size
    with ctx.progress(description, len(loader.dataset) * world) as bar:
        for images, labels in loader:
            images, labels = ctx.images(images), labels.to(ctx.device, non_blocking=True)
            with ctx.autocast():
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
            bar.advance(labels.shape[0] * world)
    loss_sum, correct1, correct5, agree, count = all_reduce_sum(ctx.dist, [loss_sum, correct1, correct5, agree, count])
    count = max(count, 1.0)
    agreement = None if teacher is None else 100.0 * agree / count
    if not labelled:
        return Metrics(loss=None, top1=None, top5=None, images=int(count), agreement=agreement)
    return Metrics(loss=loss_sum / count, top1=100.0 * correct1 / count, top5=100.0 * correct5 / count,
                   images=int(count), agreement=agreement)
