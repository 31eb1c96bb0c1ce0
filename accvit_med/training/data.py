"""Data for a run: the split's three parts as Datasets, class weights, per-epoch loaders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader

from accvit_med.datasets.cache import ImageCache, default_cache_dir
from accvit_med.datasets.torchdata import SplitImageDataset
from accvit_med.datasets.transforms import IMAGENET, Normalisation, eval_transform, train_transform
from accvit_med.errors import UserError
from accvit_med.training.distributed import DistContext
from accvit_med.training.loop import cross_entropy, epoch_indices, eval_indices, rank_epoch_seed
from accvit_med.training.recipe import FinetuneConfig


@dataclass
class RunData:
    train: SplitImageDataset
    val: SplitImageDataset
    test: SplitImageDataset
    classes: list[str]

    def part(self, name: str) -> SplitImageDataset:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def build_run_data(split, config: FinetuneConfig, for_training: bool = True,
                   normalisation: Normalisation = IMAGENET) -> RunData:
    """Datasets over ``split`` (an accvit_med.datasets.splits.Split) with the recipe's transforms and
    the starting weights' ``normalisation``."""
    root = Path(config.data_dir) if config.data_dir else Path(split.root)
    if not root.is_dir():
        raise UserError(f"data root '{root}' (from the split's manifest) does not exist; pass --data-dir")
    cache = None
    if config.cache:
        cache = ImageCache(config.cache_dir or default_cache_dir(root), config.image_size)
    index = {name: c for c, name in enumerate(split.classes)}
    parts = {}
    for name in ("train", "val", "test"):
        frame = split.part(name)
        if len(frame) == 0:
            raise UserError(f"split '{split.csv_path}' has no {name} rows; re-create it with accvit-med split")
        transform = (
            train_transform(config.randaugment_ops, config.randaugment_magnitude, normalisation)
            if name == "train" and for_training
            else eval_transform(normalisation)
        )
        metadata = {c: frame[c].tolist() for c in split.manifest.get("subgroups", []) if c in frame.columns}
        parts[name] = SplitImageDataset(
            root, frame["path"].tolist(), [index[label] for label in frame["label"]], config.image_size, transform,
            cache, metadata=metadata,
        )
    return RunData(parts["train"], parts["val"], parts["test"], list(split.classes))


def class_frequencies(dataset: SplitImageDataset, num_classes: int) -> torch.Tensor:
    return torch.bincount(torch.tensor(dataset.targets), minlength=num_classes).double()


def inverse_frequency_weights(dataset: SplitImageDataset, num_classes: int) -> torch.Tensor:
    """Class weights n / (k * n_c), so a balanced set gets all ones (sklearn's 'balanced')."""
    counts = class_frequencies(dataset, num_classes)
    if (counts == 0).any():
        missing = [c for c in range(num_classes) if counts[c] == 0]
        raise UserError(f"classes {missing} have no training images; --balance needs every class in train")
    return (counts.sum() / (num_classes * counts)).float()


def finetune_criterion(config: FinetuneConfig, train: SplitImageDataset, num_classes: int,
                       device: Optional[torch.device] = None) -> torch.nn.CrossEntropyLoss:
    """Fine-tuning's loss (training, validation, evaluate): label-smoothed cross-entropy, weighted by
    inverse class frequency in train with ``balance = weights``."""
    weights = inverse_frequency_weights(train, num_classes) if config.balance == "weights" else None
    return cross_entropy(config.label_smoothing, weights, device)


def sample_weights(dataset: SplitImageDataset, num_classes: int) -> torch.Tensor:
    """Per-sample weights that make each class equally likely to be drawn."""
    per_class = inverse_frequency_weights(dataset, num_classes).double()
    return per_class[torch.tensor(dataset.targets)]


def train_loader(
    data: RunData, config: FinetuneConfig, epoch: int, ctx: DistContext, pin_memory: bool,
    weights: Optional[torch.Tensor] = None,
) -> DataLoader:
    """This epoch's loader. Rebuilt every epoch: its order and worker seeds come from (seed, epoch)."""
    indices = epoch_indices(len(data.train), config.seed, epoch, ctx, weights)
    generator = torch.Generator().manual_seed(rank_epoch_seed(config.seed, epoch, ctx.rank))
    return DataLoader(
        data.train,
        batch_size=config.batch_size,
        sampler=indices,
        num_workers=config.workers,
        pin_memory=pin_memory,
        generator=generator,  # seeds the workers' torch, numpy and random states
        drop_last=False,
    )


def eval_loader(dataset: SplitImageDataset, config: FinetuneConfig, ctx: DistContext, pin_memory: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=eval_indices(len(dataset), ctx),
        num_workers=config.workers,
        pin_memory=pin_memory,
    )


def check_images(data: RunData, progress: bool = False, parts: Sequence[str] = ("train", "val", "test")) -> None:
    """Open every image of ``parts`` under the image policy; the first bad one is a one-line UserError.

    Images whose cache entry exists were decoded under this policy already (the entry's key holds
    the policy version) and are not decoded again, so a cached dataset is checked in moments; the
    rules on their paths (hidden files, symlinks leaving the data root) still apply.
    """
    from accvit_med.datasets.imagecheck import find_unreadable

    for part in map(data.part, parts):
        decoded = set()
        if part.cache is not None:
            decoded = {p for p in part.paths if _cached(part.cache, part.root / p)}
        problems = find_unreadable(part.root, part.paths, progress=progress, decoded=decoded)
        if problems:
            first, reason = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(f"cannot read image '{part.root / first}' (unreadable: {reason}){more}; "
                            "remove it from the split (accvit-med split --check) or replace the file")


def _cached(cache: ImageCache, source: Path) -> bool:
    try:
        return cache.entry(source).exists()
    except UserError:  # a missing source: find_unreadable names it
        return False
