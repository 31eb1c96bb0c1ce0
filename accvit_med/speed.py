"""What ``accvit-med benchmark`` and the scripts in benchmarks/ measure: throughput and peak memory.

Throughput comes from :func:`accvit_med.models.throughput.measure_throughput` (models interleaved
round by round after warm-up, median step time). This module adds the device choice, the
device settings fine-tuning uses (bf16 autocast and cuDNN autotuning on CUDA) and the peak memory of
a training step.

Peak memory is measured in a fresh process per configuration, so that one model's allocations
(and the CPU's ever-growing peak RSS) cannot leak into another's figure. It is the memory a
training step needs on top of the process before the model is built: weights, gradients, AdamW
state, inputs and activations, over two steps (the second is the first with AdamW state present).
On CUDA it is ``torch.cuda.max_memory_allocated``; on the CPU the peak resident set size (VmHWM)
minus the resident size before the model is built, which also counts allocator slack.
"""

from __future__ import annotations

import contextlib
import resource
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import throughput
from accvit_med.models.registry import create_model, model_info

DEFAULT_MODELS = ("accvit_tiny", "maxvit_t", "swin_t", "convnext_tiny")
REFERENCE_MODEL = "maxvit_t"
NUM_CLASSES = 10  # as measure_throughput's default: the head size barely matters


@dataclass(frozen=True)
class BenchmarkRow:
    name: str
    train_images_per_s: float
    infer_images_per_s: float
    peak_train_memory_bytes: int


def parse_models(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; UserError for an unknown name, a repeat or an empty list."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UserError("--models is empty; pass registry names separated by commas, e.g. accvit_tiny,maxvit_t")
    for name in names:
        model_info(name)  # raises UserError listing the known names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--models names {', '.join(repeated)} more than once; list each model once")
    return names


def reference_model(names: list[str]) -> str:
    """maxvit_t when measured (the issue's yardstick), else the first model."""
    return REFERENCE_MODEL if REFERENCE_MODEL in names else names[0]


def benchmark_device(spec: str) -> torch.device:
    """auto, cpu, cuda or cuda:N (as finetune's --device); UserError for anything else."""
    from accvit_med.devices import resolve_device
    from accvit_med.training.recipe import DEVICE_CHOICES

    if spec not in DEVICE_CHOICES and not spec.startswith("cuda:"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got '{spec}'")
    return resolve_device(spec)


def check_image_size(names: list[str], image_size: int) -> None:
    """UserError before any measuring when a model cannot take ``image_size`` inputs."""
    from accvit_med.models.registry import check_image_size as check_model_image_size

    for name in names:
        check_model_image_size(name, image_size)


def precision_context(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (how models train there), plain fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precision_label(device: torch.device) -> str:
    """How :func:`precision_context` runs models on ``device``, for table headers."""
    return "bf16 autocast" if device.type == "cuda" else "fp32"


@contextlib.contextmanager
def device_settings(device: torch.device) -> Iterator[None]:
    """What fine-tuning uses on the device: bf16 autocast and cuDNN's autotuner on CUDA, as
    ``accvit-med finetune`` sets them (restored afterwards); plain fp32 on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with precision_context(device):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved


def measure_models(
    names: list[str],
    *,
    batch_size: int,
    image_size: int,
    warmup: int,
    iters: int,
    device: torch.device,
    compile: bool = False,
    on_round: Optional[Callable[[int], None]] = None,
) -> list[BenchmarkRow]:
    """Train/inference images/s (interleaved, one process) and each model's peak training memory."""
    with device_settings(device):
        speeds = throughput.measure_throughput(
            names, batch_size=batch_size, image_size=image_size, warmup=warmup, rounds=iters,
            num_classes=NUM_CLASSES, device=device, on_round=on_round, compile=compile,
        )
    return [
        BenchmarkRow(s.name, s.train_images_per_s, s.infer_images_per_s,
                     peak_training_memory(s.name, batch_size=batch_size, image_size=image_size, device=device,
                                          compile=compile))
        for s in speeds
    ]


def results_table(rows: list[BenchmarkRow], reference: str, device: torch.device, precision: str,
                  batch_size: int, image_size: int):
    """A rich Table of ``rows`` with each model's images/s relative to ``reference``."""
    from rich.table import Table

    base = next(r for r in rows if r.name == reference)
    table = Table(title=f"throughput and memory ({device}, {precision}, batch {batch_size}, {image_size}px)",
                  caption=f"x {reference} = images/s relative to {reference}, measured in this run")
    for column in ("model", "train img/s", f"train x {reference}", "infer img/s", f"infer x {reference}",
                   "peak train memory (MiB)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        table.add_row(
            r.name, f"{r.train_images_per_s:.2f}", f"{r.train_images_per_s / base.train_images_per_s:.2f}",
            f"{r.infer_images_per_s:.2f}", f"{r.infer_images_per_s / base.infer_images_per_s:.2f}",
            f"{r.peak_train_memory_bytes / 2**20:.0f}",
        )
    return table


def peak_training_memory(
    name: str,
    *,
    batch_size: int,
    image_size: int,
    device: torch.device | str = "cpu",
    grad_checkpointing: bool = False,
    compile: bool = False,
) -> int:
    """Bytes two AdamW training steps of ``name`` need, measured in a fresh process (module docstring)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_peak_training_memory_here, name, batch_size, image_size, str(device),
                           grad_checkpointing, compile).result()


def _resident_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process.

    Linux: VmRSS and VmHWM. ``ru_maxrss`` would not do there: a child starts with its parent's
    peak, so a small model measured after a big one would show no increase at all.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except OSError:  # no procfs (macOS): ru_maxrss is in bytes there and starts afresh in a child
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak, peak


def _peak_training_memory_here(name: str, batch_size: int, image_size: int, device_name: str,
                               grad_checkpointing: bool, compile: bool) -> int:
    device = torch.device(device_name)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _resident_bytes()[0]
    model = create_model(name, num_classes=NUM_CLASSES, image_size=image_size).to(device).train()
    if grad_checkpointing:
        from accvit_med.models.activation_checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    with device_settings(device):
        for _ in range(2):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(step_model(images), labels)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _resident_bytes()[1] - before
