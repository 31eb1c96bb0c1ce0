"""Repeated augmentation (``--ra-sampler --ra-reps 3``): each image is seen ``reps`` times per epoch,
each time on a different process (so with different random augmentations), as torchvision's
``RASampler`` (after DeiT).

The shuffled index list repeats every index ``reps`` times in a row and is dealt round-robin to
the processes; each process then keeps its first ``ceil(len(dataset) / world_size)`` indices, so an
epoch still has the length of one pass over the data. torchvision additionally rounds the dataset
length down to a multiple of 256 (from DeiT); we do not, so small folders train too.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


class RASampler(Sampler[int]):
    def __init__(self, dataset_size: int, num_replicas: int, rank: int, reps: int = 3, seed: int = 0,
                 shuffle: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.dataset_size = dataset_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.reps = reps
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.num_samples = math.ceil(dataset_size * reps / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.num_selected = min(math.ceil(dataset_size / num_replicas), self.num_samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        repeated = [index for index in order for _ in range(self.reps)]
        # Pad by wrapping around so that every process gets the same number of indices.
        repeated += repeated[: self.total_size - len(repeated)]
        return iter(repeated[self.rank : self.total_size : self.num_replicas][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected
