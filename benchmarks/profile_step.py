"""Where one training step of a model spends its time: torch.profiler's table of operators.

    .venv/bin/python benchmarks/profile_step.py accvit_tiny                       # CPU, batch 8
    python3 benchmarks/profile_step.py accvit_tiny maxvit_t --device cuda --batch-size 64

Each model gets warm-up steps, then a few profiled training steps (forward, backward, AdamW step;
bf16 autocast on CUDA, as ``accvit-med benchmark``). The table is sorted by self time on the device
that does the work (CUDA kernels on a GPU, CPU operators otherwise), so the top rows are where
a speed-up has to come from.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from accvit_med.env import tune_cpu_allocator
from accvit_med.models.registry import create_model
from accvit_med.speed import NUM_CLASSES, device_settings


def profile_model(name: str, device: torch.device, batch_size: int, image_size: int, steps: int, rows: int) -> str:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, image_size=image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, 3, image_size, image_size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    with device_settings(device):
        for _ in range(3):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="registry names")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    tune_cpu_allocator()  # as the accvit-med entry point does
    device = torch.device(args.device)
    for name in args.models:
        print(f"== {name}: {args.steps} training steps, batch {args.batch_size}, {args.image_size}px, {device}")
        print(profile_model(name, device, args.batch_size, args.image_size, args.steps, args.rows), flush=True)


if __name__ == "__main__":
    main()
