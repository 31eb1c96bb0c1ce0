"""Multi-process training with PyTorch's own DDP under ``torchrun``.

``torchrun --nproc-per-node N -m accvit_med finetune ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
:func:`init_distributed` joins the process group (NCCL on CUDA, gloo on CPU). Every rank trains on
its shard of each epoch's sample order; only rank 0 writes files; evaluation results are gathered
to every rank with their row indices, so each row is counted exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun process group if this process was started by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device_type))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def is_main_process() -> bool:
    """Whether this process is the one that prints and writes: rank 0 of the process group if it
    is joined, else of the torchrun launch (RANK), else the only process there is."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def process_group_backend(device_type: str) -> str:
    """NCCL for CUDA tensors (DDP's gradients); gloo for the CPU tensors and pickled objects that
    the metric reductions and gathers send. NCCL alone refuses CPU tensors."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    if not ctx.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. a decision that must be the same everywhere)."""
    if not ctx.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
