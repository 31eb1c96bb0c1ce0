"""Peak memory of AdamW training steps with and without activation checkpointing (--grad-checkpointing).

    .venv/bin/python benchmarks/bench_memory.py                          # accvit_tiny, batch 32, CPU
    .venv/bin/python benchmarks/bench_memory.py --models accvit_nano swin_t --batch-size 16 --device cuda

Each configuration runs in its own fresh process (accvit_med.speed.peak_training_memory), so
the figures are independent: CPU = peak resident set size minus the size before the model is built;
CUDA = torch.cuda.max_memory_allocated (bf16 autocast). Step time is printed too: checkpointing
buys memory with one extra forward pass per block.
"""

from __future__ import annotations

import argparse
import time

from accvit_med.speed import peak_training_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["accvit_tiny"], help="registry names")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, batch {args.batch_size}, {args.image_size}px, two AdamW steps per configuration")
    print(f"{'model':<16}{'plain MiB':>11}{'checkpointed MiB':>18}{'saving':>9}{'plain s':>9}{'ckpt s':>9}")
    for name in args.models:
        peaks, seconds = [], []
        for grad_checkpointing in (False, True):
            start = time.perf_counter()
            peaks.append(peak_training_memory(name, batch_size=args.batch_size, image_size=args.image_size,
                                              device=args.device, grad_checkpointing=grad_checkpointing))
            seconds.append(time.perf_counter() - start)  # includes the child's start-up and model build
        saving = 1 - peaks[1] / peaks[0]
        print(f"{name:<16}{peaks[0] / 2**20:>11.0f}{peaks[1] / 2**20:>18.0f}{saving:>9.1%}"
              f"{seconds[0]:>9.1f}{seconds[1]:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
