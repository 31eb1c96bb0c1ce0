"""Training and inference throughput of registry models, measured side by side in one process.

Models are measured interleaved (one step of each model in turn, round after round), after warm-up,
so that load from other processes and CPU frequency changes hit every model alike. A step's time is
the median over rounds; images/s = batch size / median step time. Training is forward + backward +
AdamW step; inference is a forward pass in eval mode without autograd.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from accvit_med.models.registry import create_model


@dataclass(frozen=True)
class Throughput:
    name: str
    train_images_per_s: float
    infer_images_per_s: float


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                labels: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def _infer_step(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode():
            model(images)

    return step


def _timed(step: Callable[[], None], device: torch.device) -> float:
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_throughput(
    names: list[str],
    batch_size: int = 8,
    image_size: int = 224,
    warmup: int = 2,
    rounds: int = 5,
    num_classes: int = 10,
    device: str | torch.device = "cpu",
    on_round: Callable[[int], None] | None = None,
    compile: bool = False,
) -> list[Throughput]:
    """Train and inference images/s of each model in ``names`` (see the module docstring).

    ``compile`` wraps every model in ``torch.compile``; compilation happens in the warm-up rounds,
    so give it at least one.
    """
    wrap = torch.compile if compile else (lambda module: module)
    device = torch.device(device)
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    train_steps, infer_steps = {}, {}
    for name in names:
        train_model = create_model(name, num_classes=num_classes, image_size=image_size).to(device).train()
        optimizer = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
        train_steps[name] = _train_step(wrap(train_model), optimizer, images, labels)
        infer_model = create_model(name, num_classes=num_classes, image_size=image_size).to(device).eval()
        infer_steps[name] = _infer_step(wrap(infer_model), images)
    times: dict[tuple[str, str], list[float]] = {(n, kind): [] for n in names for kind in ("train", "infer")}
    for round_index in range(warmup + rounds):
        for name in names:
            for kind, steps in (("train", train_steps), ("infer", infer_steps)):
                seconds = _timed(steps[name], device)
                if round_index >= warmup:
                    times[(name, kind)].append(seconds)
        if on_round is not None:
            on_round(round_index)
    return [
        Throughput(
            name,
            batch_size / statistics.median(times[(name, "train")]),
            batch_size / statistics.median(times[(name, "infer")]),
        )
        for name in names
    ]
