"""Which CUDA settings make ACC-ViT-T fastest next to MaxViT-T: one process, one table.

    python3 benchmarks/gpu_variants.py --batch-size 64

Each variant is a pair of settings: cuDNN's autotuner (``torch.backends.cudnn.benchmark``) and
whether ACC-ViT's depthwise branches run on a contiguous NCHW copy of the expanded map
(``FastAtrousInvertedResidual.cuda_branches_contiguous`` in ``accvit_med.models.fast.conv``) or on
the channels-last map itself.
For every variant, accvit_tiny and maxvit_t are measured interleaved (bf16 autocast), so the
ratio in each row compares the two under the same settings. The chosen defaults are the ones
``accvit-med benchmark`` and ``accvit-med finetune`` use.
"""

from __future__ import annotations

import argparse

import torch

from accvit_med.models.fast.conv import FastAtrousInvertedResidual
from accvit_med.models.throughput import measure_throughput
from accvit_med.speed import precision_context

VARIANTS = (
    ("cudnn autotune off, branches channels-last", False, False),
    ("cudnn autotune on, branches channels-last", True, False),
    ("cudnn autotune on, branches NCHW", True, True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda")
    rows = []
    saved = torch.backends.cudnn.benchmark, FastAtrousInvertedResidual.cuda_branches_contiguous
    try:
        for label, autotune, contiguous in VARIANTS:
            torch.backends.cudnn.benchmark = autotune
            FastAtrousInvertedResidual.cuda_branches_contiguous = contiguous
            with precision_context(device):
                acc, ref = measure_throughput(["accvit_tiny", "maxvit_t"], batch_size=args.batch_size,
                                              warmup=args.warmup, rounds=args.rounds, device=device)
            rows.append((label, acc, ref))
            print(f"{label}: done", flush=True)
    finally:
        torch.backends.cudnn.benchmark, FastAtrousInvertedResidual.cuda_branches_contiguous = saved
    print(f"\n{torch.cuda.get_device_name()}, bf16 autocast, batch {args.batch_size}, 224px")
    print(f"{'variant':<44}{'accvit train':>13}{'maxvit train':>13}{'ratio':>7}"
          f"{'accvit infer':>13}{'maxvit infer':>13}{'ratio':>7}")
    for label, acc, ref in rows:
        print(f"{label:<44}{acc.train_images_per_s:>13.1f}{ref.train_images_per_s:>13.1f}"
              f"{acc.train_images_per_s / ref.train_images_per_s:>7.2f}{acc.infer_images_per_s:>13.1f}"
              f"{ref.infer_images_per_s:>13.1f}{acc.infer_images_per_s / ref.infer_images_per_s:>7.2f}")


if __name__ == "__main__":
    main()
