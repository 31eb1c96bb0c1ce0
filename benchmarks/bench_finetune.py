"""Fine-tuning speed, side by side in one run (not a test: numbers depend on the machine).

1. Training images/s of our loop (accvit_med.training.loop.train_one_epoch: label smoothing,
   gradient clipping, loss/accuracy bookkeeping) next to a bare PyTorch loop (forward, loss,
   backward, step) over the same model and the same in-memory batches.
2. Image decoding images/s for large photographs (EyePACS-like, 3000x2000 JPEG): a plain full
   decode + resize, our decoder (JPEG draft mode), and reads from the resized-image cache.

    .venv/bin/python benchmarks/bench_finetune.py [--model accvit_femto] [--batch-size 8] [--steps 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from accvit_med.datasets.cache import ImageCache, decode_resized
from accvit_med.datasets.transforms import resize_and_center_crop
from accvit_med.models import create_model
from accvit_med.training.context import RunContext
from accvit_med.training.loop import train_one_epoch


def _bare_loop(model, batches, optimizer, criterion) -> None:
    model.train()
    for images, targets, _ in batches:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(images), targets).backward()
        optimizer.step()


def _our_loop(model, batches, optimizer, criterion) -> None:
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    train_one_epoch(model, batches, criterion, optimizer, scaler, RunContext(torch.device("cpu")), 1.0)


def bench_training(model_name: str, batch_size: int, steps: int, image_size: int) -> None:
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size)
    batch = (images, torch.randint(0, 7, (batch_size,)), torch.arange(batch_size))
    loops = {"bare PyTorch loop": _bare_loop, "accvit-med loop": _our_loop}
    setups = {}
    for name in loops:
        model = create_model(model_name, num_classes=7)
        setups[name] = (model, torch.optim.AdamW(model.parameters(), lr=5e-5), nn.CrossEntropyLoss(label_smoothing=0.1))
        loops[name](*_args(setups[name], [batch]))  # warm-up step (allocations, kernels)
    # One step of each in turn, so a busy machine slows both alike; the median resists outliers.
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(steps):
        for name, loop in loops.items():
            started = time.perf_counter()
            loop(*_args(setups[name], [batch]))
            seconds[name].append(time.perf_counter() - started)
    rates = {name: batch_size / float(np.median(times)) for name, times in seconds.items()}
    print(f"training {model_name}, batch {batch_size}, {image_size} px, median of {steps} steps, "
          f"CPU threads {torch.get_num_threads()}")
    for name, rate in rates.items():
        print(f"  {name:<20} {rate:8.2f} images/s")
    print(f"  ratio ours / bare    {rates['accvit-med loop'] / rates['bare PyTorch loop']:8.3f}")


def _args(setup, batches):
    model, optimizer, criterion = setup
    return model, batches, optimizer, criterion


def _full_decode(path: Path, size: int) -> Image.Image:
    with Image.open(path) as image:
        return resize_and_center_crop(image.convert("RGB"), size)


def bench_decoding(count: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rng = np.random.default_rng(0)
        paths = []
        for i in range(count):
            # Smooth content compresses like a photograph (random noise would be unrealistically slow).
            coarse = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((3000, 2000), Image.BICUBIC)
            path = folder / f"{i}.jpeg"
            image.save(path, quality=90)
            paths.append(path)
        cache = ImageCache(folder / "cache", size)
        for path in paths:
            cache.ensure(path)
        rates = {}
        for name, load in (
            ("full decode + resize", lambda p: _full_decode(p, size)),
            ("draft decode + resize", lambda p: decode_resized(p, size)),
            ("resized-image cache", cache.load),
        ):
            started = time.perf_counter()
            for path in paths:
                load(path)
            rates[name] = count / (time.perf_counter() - started)
        print(f"decoding {count} JPEGs of 3000x2000 to {size}x{size} (one process)")
        for name, rate in rates.items():
            print(f"  {name:<22} {rate:8.1f} images/s   x{rate / rates['full decode + resize']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="accvit_femto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=12, help="large JPEGs for the decoding benchmark")
    args = parser.parse_args()
    bench_training(args.model, args.batch_size, args.steps, args.image_size)
    bench_decoding(args.images, args.image_size)


if __name__ == "__main__":
    main()
