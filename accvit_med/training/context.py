"""Where a run computes: one object instead of device, AMP dtype, memory format, ranks and console
passed one by one through every function."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Optional

import torch
from rich.console import Console
from torch import nn

from accvit_med.progress import EpochBar
from accvit_med.training.distributed import DistContext


def amp_dtype_for(amp: bool, device: torch.device) -> Optional[torch.dtype]:
    """Autocast only on CUDA: bf16 where the GPU has it (no loss scaling needed), fp16 + GradScaler else."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(frozen=True)
class RunContext:
    """Where a run computes; every rank has its own (``dist`` says which rank it is)."""

    device: torch.device
    dist: DistContext = DistContext()
    console: Console = field(default_factory=lambda: Console(stderr=True))
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def amp_name(self) -> Optional[str]:
        """The AMP dtype as config.json records it (``bfloat16``, ``float16`` or None)."""
        return None if self.amp_dtype is None else str(self.amp_dtype).replace("torch.", "")

    def images(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the run's memory format."""
        return batch.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Loss scaling only for fp16; bf16 and float32 need none.
        return torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def progress(self, description: str, total: int) -> EpochBar:
        """A bar over ``total`` images, shown by rank 0 only."""
        return EpochBar(self.console, description, total, self.is_main)

    def wrap_for_training(self, model: nn.Module) -> nn.Module:
        """DDP around ``model`` under torchrun; ``model`` itself in a single process."""
        if not self.dist.enabled:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None
        )
