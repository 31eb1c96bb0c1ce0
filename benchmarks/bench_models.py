"""Train and inference images/s of accvit_tiny next to maxvit_t, swin_t and convnext_tiny.

    .venv/bin/python benchmarks/bench_models.py                     # short run (a minute or two on 2 cores)
    .venv/bin/python benchmarks/bench_models.py --batch-size 32 --rounds 20 --device cuda

All models are measured in one process, interleaved round by round after warm-up (see
accvit_med.models.benchmark), and each is shown as a ratio to maxvit_t. Numbers from a shared
machine are noisy: compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import sys

import torch

from accvit_med.env import environment_summary
from accvit_med.models.benchmark import measure_throughput

MODELS = ["accvit_tiny", "maxvit_t", "swin_t", "convnext_tiny"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="registry names (the first is the subject)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference = "maxvit_t" if "maxvit_t" in args.models else args.models[0]
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.image_size}px, {args.warmup} warm-up + {args.rounds} timed rounds; "
          f"torch {environment_summary().get('torch', torch.__version__)}", flush=True)
    results = measure_throughput(
        args.models, batch_size=args.batch_size, image_size=args.image_size, warmup=args.warmup,
        rounds=args.rounds, device=args.device,
        on_round=lambda i: print(f"  round {i + 1}/{args.warmup + args.rounds} done", file=sys.stderr, flush=True),
    )
    base = next(r for r in results if r.name == reference)
    print(f"{'model':<16}{'train img/s':>12}{'ratio':>8}{'infer img/s':>13}{'ratio':>8}")
    for r in results:
        print(f"{r.name:<16}{r.train_images_per_s:>12.2f}{r.train_images_per_s / base.train_images_per_s:>8.2f}"
              f"{r.infer_images_per_s:>13.2f}{r.infer_images_per_s / base.infer_images_per_s:>8.2f}")
    print(f"(ratio = images/s relative to {reference})")


if __name__ == "__main__":
    main()
