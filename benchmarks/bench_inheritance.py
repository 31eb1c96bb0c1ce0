"""Does inheriting MaxViT-T's weights help ACC-ViT? Measured on synthetic tasks on the CPU (not a test).

No real ImageNet weights can be downloaded here, so the mechanism is measured on what can be made:

1. Task A (3 "skin" classes, 224 px): train a torchvision ``maxvit_t`` teacher from scratch.
2. Inherit it into ``accvit_tiny`` (accvit_med.models.inheritance, the same code as
   ``--weights maxvit_t``) and report task-A test accuracy WITHOUT any training: inherited ACC-ViT
   vs the teacher vs a random ACC-ViT; then after one epoch of distillation (the pretrain
   ``--teacher`` loss, weight 1) on task A's training images without their labels.
3. Task B (3 "ultrasound" classes): fine-tune ``accvit_tiny`` from the inherited initialisation
   and from random initialisation (new head each), test macro-F1 after every epoch.

    nice .venv/bin/python benchmarks/bench_inheritance.py [--per-class 6] [--epochs 2] [--threads 2]

Sizes are small on purpose (the CPU is shared); numbers vary with the seed, so read differences of
a few points as noise.
"""

from __future__ import annotations

import argparse
import time

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


def make_task(style: str, classes: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``classes * per_class`` rendered images (normalised, 224 px) and their labels, shuffled."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(classes):
        for _ in range(per_class):
            images.append(render(rng, label + (3 if style == "ultrasound" else 0), (SIZE, SIZE), style))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    order = torch.from_numpy(rng.permutation(len(labels)))
    return x[order], torch.tensor(labels)[order]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 10) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    pred = predict(model, x).numpy()
    return 100.0 * float((pred == y.numpy()).mean()), 100.0 * f1_score(y.numpy(), pred, average="macro")


def train_epoch(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int,
                teacher: nn.Module | None = None) -> float:
    """One epoch: cross-entropy on labels, or (with ``teacher``) the distillation loss alone."""
    model.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    total, started = 0.0, time.perf_counter()
    for step, i in enumerate(range(0, len(x), batch)):
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
        done = i + len(index)
        rate = done / (time.perf_counter() - started)
        print(f"    step {step + 1}: {done}/{len(x)} images, {rate:.2f} img/s, ETA {(len(x) - done) / rate:.0f}s",
              flush=True)
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=6, help="training images per class (test: half)")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs on task B")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    classes, test_per_class = 3, max(1, args.per_class // 2)
    xa, ya = make_task("skin", classes, args.per_class, args.seed)
    xa_test, ya_test = make_task("skin", classes, test_per_class, args.seed + 1)
    xb, yb = make_task("ultrasound", classes, args.per_class, args.seed + 2)
    xb_test, yb_test = make_task("ultrasound", classes, test_per_class, args.seed + 3)
    rows: list[tuple[str, str, float, float]] = []

    def record(task: str, name: str, accuracy: float, f1: float) -> None:
        rows.append((task, name, accuracy, f1))
        print(f"  RESULT | {task} | {name} | {accuracy:.1f} | {f1:.1f} |", flush=True)  # partial runs keep these

    print("1. teacher: maxvit_t from scratch on task A", flush=True)
    teacher = torchvision.models.maxvit_t(num_classes=classes)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=0.05)
    for epoch in range(1, args.teacher_epochs + 1):
        loss = train_epoch(teacher, optimizer, xa, ya, args.batch_size, seed=epoch)
        print(f"  teacher epoch {epoch}: loss {loss:.3f}, test acc/F1 {scores(teacher, xa_test, ya_test)}", flush=True)
    teacher.eval().requires_grad_(False)
    record("A", "maxvit_t teacher (trained)", *scores(teacher, xa_test, ya_test))

    print("2. inherit into accvit_tiny, no training", flush=True)
    inherited, summary = inherit_from_maxvit("accvit_tiny", teacher.state_dict(), num_classes=classes)
    print("  " + summary.lines()[0], flush=True)
    record("A", "accvit_tiny inherited, no training", *scores(inherited, xa_test, ya_test))
    torch.manual_seed(args.seed)
    random_model = create_model("accvit_tiny", num_classes=classes)
    record("A", "accvit_tiny random, no training", *scores(random_model, xa_test, ya_test))
    inherited_state = {k: v.clone() for k, v in inherited.state_dict().items()}

    print("  one epoch of distillation on task A's images (no labels)", flush=True)
    optimizer = torch.optim.AdamW(inherited.parameters(), lr=1e-4, weight_decay=0.05)
    train_epoch(inherited, optimizer, xa, ya, args.batch_size, seed=100, teacher=teacher)
    record("A", "accvit_tiny inherited + 1 epoch distillation", *scores(inherited, xa_test, ya_test))

    print("3. fine-tuning on task B", flush=True)
    curves: dict[str, list[float]] = {}
    for start in ("inherited", "random"):
        torch.manual_seed(args.seed)
        model = create_model("accvit_tiny", num_classes=classes)  # new head (seeded alike for both starts)
        if start == "inherited":
            head = {k: v for k, v in model.state_dict().items() if k.startswith("classifier.5.")}
            model.load_state_dict({**inherited_state, **head})
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
        curves[start] = []
        for epoch in range(1, args.epochs + 1):
            train_epoch(model, optimizer, xb, yb, args.batch_size, seed=200 + epoch)
            curves[start].append(scores(model, xb_test, yb_test)[1])
            print(f"  {start} epoch {epoch}: test macro-F1 {curves[start][-1]:.1f}", flush=True)

    print("\n| task | model | test accuracy % | test macro-F1 % |\n|---|---|---|---|")
    for task, name, accuracy, f1 in rows:
        print(f"| {task} | {name} | {accuracy:.1f} | {f1:.1f} |")
    print("\n| task B fine-tuning, test macro-F1 % | " + " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1))
          + " |\n|---|" + "---|" * args.epochs)
    for start, curve in curves.items():
        print(f"| accvit_tiny from {start} | " + " | ".join(f"{v:.1f}" for v in curve) + " |")
    print(f"\n({args.per_class} training and {test_per_class} test images per class, 3 classes, 224 px, "
          f"teacher {args.teacher_epochs} epochs, batch {args.batch_size}, seed {args.seed})")


if __name__ == "__main__":
    main()
