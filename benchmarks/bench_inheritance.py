"""Does inheriting MaxViT-T's weights help ACC-ViT? Measured on synthetic tasks (not a test).

No real ImageNet weights can be downloaded here, so the mechanism is measured on what can be made:

1. Task A (3 "skin" classes, 224 px): train a torchvision ``maxvit_t`` teacher from scratch, until
   its validation accuracy reaches ``--teacher-target`` or ``--teacher-epochs`` have passed. Its
   test accuracy is reported first: unless it learnt task A, nothing below means anything.
2. Inherit it into the student (``accvit_tiny``; accvit_med.models.inheritance, the same code as
   ``--weights maxvit_t``) and report task-A test accuracy WITHOUT any training: inherited vs the
   teacher vs a random student; then after ``--distill-epochs`` of distillation (the pretrain
   ``--teacher`` loss, weight 1) on task A's training images without their labels.
3. Task B (3 "ultrasound" classes): fine-tune the student from the inherited initialisation and
   from random initialisation (new head each), test macro-F1 after every epoch.

Every seed repeats 1-3 (initialisations and batch order; the images are drawn once, from
``--data-seed``). Models whose weights were trained get their BatchNorm statistics re-estimated on
their training images before they are scored: MaxViT's BatchNorm momentum (0.01) leaves the running
statistics of a short run far from the data, and eval-mode predictions then collapse to one class.

    python benchmarks/bench_inheritance.py                      # CPU-sized (minutes on 2 cores)
    python benchmarks/bench_inheritance.py --device cuda --per-class 200 --teacher-epochs 20 \\
        --epochs 5 --batch-size 32 --seeds 0,1,2 --json out.json

Prints RESULT lines as it goes (a partial run keeps them), then the tables (mean and sd over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from sklearn.metrics import f1_score
from torch import nn

from accvit_med.datasets.synthetic import render
from accvit_med.models import create_model
from accvit_med.models.inheritance import inherit_from_maxvit
from accvit_med.training.pretrain.distill import distillation_loss
from accvit_med.training.pretrain.imagenet import IMAGENET_MEAN, IMAGENET_STD

SIZE = 224
CLASSES = 3


def make_task(style: str, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``CLASSES * per_class`` rendered images (normalised, 224 px) and their labels, shuffled."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(CLASSES):
        for _ in range(per_class):
            images.append(render(rng, label + (3 if style == "ultrasound" else 0), (SIZE, SIZE), style))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    order = torch.from_numpy(rng.permutation(len(labels)))
    return x[order], torch.tensor(labels)[order]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]).argmax(1).cpu() for i in range(0, len(x), batch)])


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    pred = predict(model, x, batch).numpy()
    truth = y.cpu().numpy()
    return 100.0 * float((pred == truth).mean()), 100.0 * f1_score(truth, pred, average="macro")


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int) -> None:
    """Running BatchNorm statistics = the exact mean over ``x`` of the batch statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def train_epoch(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int,
                teacher: nn.Module | None = None) -> float:
    """One epoch: cross-entropy on labels, or (with ``teacher``) the distillation loss alone."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
    total, started = 0.0, time.perf_counter()
    for i in range(0, len(x), batch):
        index = order[i : i + batch]
        logits = model(x[index])
        if teacher is None:
            loss = nn.functional.cross_entropy(logits, y[index])
        else:
            with torch.no_grad():
                teacher_logits = teacher(x[index])
            loss = distillation_loss(logits, teacher_logits, temperature=1.0, weight=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
    print(f"    epoch: {len(x)} images, {len(x) / (time.perf_counter() - started):.1f} img/s, "
          f"loss {total / len(x):.3f}", flush=True)
    return total / len(x)


def train_teacher(args, data: dict, seed: int) -> tuple[nn.Module, int]:
    """MaxViT-T from scratch on task A until ``--teacher-target`` validation accuracy (or the epochs)."""
    torch.manual_seed(seed)
    teacher = torchvision.models.maxvit_t(num_classes=CLASSES).to(args.device)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=args.teacher_lr, weight_decay=0.05)
    epochs = 0
    for epoch in range(1, args.teacher_epochs + 1):
        train_epoch(teacher, optimizer, *data["a_train"], args.batch_size, seed=1000 * seed + epoch)
        reestimate_batchnorm(teacher, data["a_train"][0], args.batch_size)
        epochs = epoch
        accuracy = scores(teacher, *data["a_val"], args.batch_size)[0]
        print(f"  teacher epoch {epoch}: validation accuracy {accuracy:.1f}%", flush=True)
        if accuracy >= args.teacher_target:
            break
    return teacher.eval().requires_grad_(False), epochs


def run_seed(args, data: dict, seed: int) -> dict:
    """Steps 1-3 for one seed: the teacher's accuracy, the task-A rows and the task-B curves."""
    batch, student = args.batch_size, args.student
    result: dict = {"seed": seed, "task_a": {}, "task_b": {}}

    def record(name: str, accuracy: float, f1: float) -> None:
        result["task_a"][name] = {"accuracy": accuracy, "macro_f1": f1}
        print(f"  RESULT | seed {seed} | A | {name} | {accuracy:.1f} | {f1:.1f} |", flush=True)

    print(f"seed {seed}. 1. teacher: maxvit_t from scratch on task A", flush=True)
    teacher, result["teacher_epochs"] = train_teacher(args, data, seed)
    record("maxvit_t teacher (trained)", *scores(teacher, *data["a_test"], batch))

    print(f"seed {seed}. 2. inherit into {student}, no training", flush=True)
    state = {k: v.cpu() for k, v in teacher.state_dict().items()}
    inherited, summary = inherit_from_maxvit(student, state, num_classes=CLASSES)
    inherited.to(args.device)
    print("  " + summary.lines()[0], flush=True)
    record(f"{student} inherited, no training", *scores(inherited, *data["a_test"], batch))
    torch.manual_seed(seed)
    record(f"{student} random, no training", *scores(create_model(student, num_classes=CLASSES).to(args.device),
                                                       *data["a_test"], batch))
    inherited_state = {k: v.clone() for k, v in inherited.state_dict().items()}

    optimizer = torch.optim.AdamW(inherited.parameters(), lr=args.lr, weight_decay=0.05)
    for epoch in range(1, args.distill_epochs + 1):
        train_epoch(inherited, optimizer, *data["a_train"], batch, seed=1000 * seed + 100 + epoch, teacher=teacher)
    reestimate_batchnorm(inherited, data["a_train"][0], batch)
    record(f"{student} inherited + {args.distill_epochs} epoch(s) distillation",
           *scores(inherited, *data["a_test"], batch))

    print(f"seed {seed}. 3. fine-tuning on task B", flush=True)
    for start in ("inherited", "random"):
        torch.manual_seed(seed)
        model = create_model(student, num_classes=CLASSES)  # new head, seeded alike for both starts
        if start == "inherited":
            head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.5.")}
            model.load_state_dict({**{k: v.cpu() for k, v in inherited_state.items()}, **head})
        model.to(args.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        curve = result["task_b"][start] = []
        for epoch in range(1, args.epochs + 1):
            train_epoch(model, optimizer, *data["b_train"], batch, seed=1000 * seed + 200 + epoch)
            reestimate_batchnorm(model, data["b_train"][0], batch)
            curve.append(scores(model, *data["b_test"], batch)[1])
            print(f"  RESULT | seed {seed} | B | {start} | epoch {epoch} | macro-F1 {curve[-1]:.1f} |", flush=True)
    return result


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


def tables(results: list[dict], args) -> str:
    """The Markdown tables: task A per model, task B per start and epoch (mean ± sd over seeds)."""
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [f"Seeds {seeds}; mean ± sd (sample) over seeds.", "",
             "| task A | test accuracy % | test macro-F1 % |", "|---|---|---|"]
    for name in results[0]["task_a"]:
        lines.append(f"| {name} | {_mean_sd([r['task_a'][name]['accuracy'] for r in results])} | "
                     f"{_mean_sd([r['task_a'][name]['macro_f1'] for r in results])} |")
    header = "| task B fine-tuning, test macro-F1 % | " + " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1))
    lines += ["", header + " |", "|---|" + "---|" * args.epochs]
    for start in results[0]["task_b"]:
        cells = [_mean_sd([r["task_b"][start][e] for r in results]) for e in range(args.epochs)]
        lines.append(f"| {args.student} from {start} | " + " | ".join(cells) + " |")
    took = ", ".join(str(r["teacher_epochs"]) for r in results)
    lines += ["", (f"({args.per_class} training, {max(1, args.per_class // 2)} validation and test images per class, "
                   f"3 classes, 224 px, teacher up to {args.teacher_epochs} epochs (stops at {args.teacher_target}% "
                   f"validation accuracy; took {took}), batch {args.batch_size}, device {args.device})")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=6, help="training images per class (validation, test: half)")
    parser.add_argument("--teacher-epochs", type=int, default=4, help="at most this many teacher epochs")
    parser.add_argument("--teacher-target", type=float, default=95.0,
                        help="stop training the teacher once its validation accuracy reaches this (%%)")
    parser.add_argument("--teacher-lr", type=float, default=1e-3)
    parser.add_argument("--distill-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs on task B")
    parser.add_argument("--lr", type=float, default=1e-4, help="distillation and fine-tuning learning rate")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--student", default="accvit_tiny",
                        help="ACC-ViT variant that inherits (tiny, nano, pico, femto)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    held_out = max(1, args.per_class // 2)
    s = args.data_seed
    data = {"a_train": make_task("skin", args.per_class, s), "a_val": make_task("skin", held_out, s + 1),
            "a_test": make_task("skin", held_out, s + 2), "b_train": make_task("ultrasound", args.per_class, s + 3),
            "b_test": make_task("ultrasound", held_out, s + 4)}
    data = {k: (x.to(args.device), y.to(args.device)) for k, (x, y) in data.items()}
    results = [run_seed(args, data, int(seed)) for seed in args.seeds.split(",")]
    text = tables(results, args)
    print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"settings": {k: str(v) if isinstance(v, Path) else v
                                                      for k, v in vars(args).items()},
                                         "results": results, "markdown": text}, indent=2))


if __name__ == "__main__":
    main()
