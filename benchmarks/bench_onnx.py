"""`predict --onnx` (ONNX Runtime, no torch) against `predict --run` (PyTorch) on the CPU.

For each model: a one-epoch run on a small synthetic folder, exported with `accvit-med export`,
then both commands run as the user runs them (a fresh process each time, default workers):
start-up = the wall time of predicting one image (imports, model or session load, first
inference); images/s = (N - 1) / (time for N images - time for one). Each figure is the median
of --repeats runs. Prints both side by side with their ratios and writes a CSV.

    .venv/bin/python benchmarks/bench_onnx.py --models accvit_femto,convnext_tiny --images 64
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_run(root: Path, model: str, image_size: int) -> Path:
    from accvit_med.datasets.create_split import create_split
    from accvit_med.training.finetune import finetune
    from accvit_med.training.recipe import FinetuneConfig

    for label in ("a", "b"):
        make_images(root / "data" / label, 5, seed=ord(label))
    create_split("folder", root / "data", root / "split.csv", seed=0, grouped=False, progress=False)
    config = FinetuneConfig(split=str(root / "split.csv"), model=model, weights="none", epochs=1, batch_size=4,
                            image_size=image_size, randaugment_ops=0, workers=0, seed=0).validate()
    finetune(config, out=str(root / "run"))
    return root / "run"


def cli(*args: str) -> float:
    """Wall seconds of one `accvit-med` process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "accvit_med", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(source: list[str], images: list[Path], repeats: int) -> tuple[float, float]:
    one = statistics.median(cli("predict", *source, str(images[0])) for _ in range(repeats))
    many = statistics.median(cli("predict", *source, *map(str, images)) for _ in range(repeats))
    return one, (len(images) - 1) / max(many - one, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="accvit_femto,convnext_tiny")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--csv", type=Path, default=REPO / "benchmarks" / "results" / "onnx_cpu.csv")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp) / "new", args.images, seed=7)
        for model in args.models.split(","):
            run = make_run(Path(tmp) / model, model, args.image_size)
            onnx_file = Path(tmp) / f"{model}.onnx"
            cli("export", "--run", str(run), "--format", "onnx", "--out", str(onnx_file))
            torch_start, torch_rate = measure(["--run", str(run), "--device", "cpu"], images, args.repeats)
            onnx_start, onnx_rate = measure(["--onnx", str(onnx_file)], images, args.repeats)
            rows.append({"model": model, "image_size": args.image_size, "images": args.images,
                         "startup_run_s": round(torch_start, 2), "startup_onnx_s": round(onnx_start, 2),
                         "startup_ratio_run_over_onnx": round(torch_start / onnx_start, 2),
                         "img_per_s_run": round(torch_rate, 1), "img_per_s_onnx": round(onnx_rate, 1),
                         "throughput_ratio_onnx_over_run": round(onnx_rate / torch_rate, 2)})
            print(rows[-1], flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cores, load = os.cpu_count(), os.getloadavg()[0]
    print(f"\n{cores} CPU cores, load average {load:.1f} at the end")
    print("| model | start-up --run (s) | start-up --onnx (s) | ratio | img/s --run | img/s --onnx | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['startup_run_s']} | {r['startup_onnx_s']} | {r['startup_ratio_run_over_onnx']}x "
              f"| {r['img_per_s_run']} | {r['img_per_s_onnx']} | {r['throughput_ratio_onnx_over_run']}x |")
    print(f"written: {args.csv}")


if __name__ == "__main__":
    main()
