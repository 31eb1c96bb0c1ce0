"""Train and inference images/s and peak memory of accvit_tiny next to maxvit_t, swin_t and convnext_tiny.

    .venv/bin/python benchmarks/bench_models.py        # CPU, batch 8 (a few minutes on 2 cores)
    python3 benchmarks/bench_models.py --device cuda --batch-size 64 --iters 10 --warmup 3
    .venv/bin/python benchmarks/bench_models.py --models accvit_tiny,maxvit_t --compile

The same measurement as ``accvit-med benchmark`` (accvit_med.speed): all models in one
process, interleaved round by round after warm-up, each shown as a ratio to maxvit_t; fp32 on the
CPU, bf16 autocast and cuDNN autotuning on CUDA; peak training memory in a fresh process per model.
Numbers from a shared machine are noisy: compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import sys

import torch
from rich.console import Console

from accvit_med.env import environment_summary, tune_cpu_allocator
from accvit_med.speed import (
    DEFAULT_MODELS,
    benchmark_device,
    check_image_size,
    measure_models,
    parse_models,
    precision_label,
    reference_model,
    results_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="registry names, comma-separated")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = "glibc malloc tuned" if tune_cpu_allocator() else "system malloc"
    names = parse_models(args.models)
    check_image_size(names, args.image_size)
    device = benchmark_device(args.device)
    precision = precision_label(device)
    print(f"{device}, {precision}, {torch.get_num_threads()} threads, {allocator}, batch {args.batch_size}, "
          f"{args.image_size}px, {args.warmup} warm-up + {args.iters} timed rounds"
          f"{', compiled' if args.compile else ''}; torch {environment_summary()['torch']}", flush=True)
    rows = measure_models(
        names, batch_size=args.batch_size, image_size=args.image_size, warmup=args.warmup, iters=args.iters,
        device=device, compile=args.compile,
        on_round=lambda i: print(f"  round {i + 1}/{args.warmup + args.iters} done", file=sys.stderr, flush=True),
    )
    Console(width=120).print(results_table(rows, reference_model(names), device, precision, args.batch_size,
                                           args.image_size))


if __name__ == "__main__":
    main()
