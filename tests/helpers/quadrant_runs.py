"""The quadrant task: synthetic images whose class evidence sits in one known place, and runs trained on them.

The class signal (a yellow disk) sits in the top-left quadrant and a blue distractor elsewhere, so a
model that learnt the task has its evidence for 'signal' in the top-left quadrant and nowhere else.
Runs train the shrunk ConvNeXt (``helpers.tiny_models.shrink_convnext``, which the caller activates).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from accvit_med.datasets.create_split import create_split
from accvit_med.training.finetune import finetune
from accvit_med.training.recipe import FinetuneConfig

QUADRANT_CLASSES = ("plain", "signal")
SIDE = 64  # 1/32 of it: ConvNeXt's last stage is 2 x 2, one cell per quadrant


def _quadrant_image(rng: np.random.Generator, signal: bool) -> np.ndarray:
    """Grey noise, a blue disk in one of the three other quadrants, and for 'signal' a yellow disk top-left."""
    image = rng.normal(110, 6, (SIDE, SIDE, 3))
    half = SIDE // 2
    yy, xx = np.mgrid[:SIDE, :SIDE]
    disks = [(int(rng.integers(1, 4)), (60, 90, 250))] + ([(0, (250, 230, 60))] if signal else [])
    for quadrant, colour in disks:
        cy = rng.integers(9, half - 9) + half * (quadrant // 2)
        cx = rng.integers(9, half - 9) + half * (quadrant % 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = colour
    return np.clip(image, 0, 255).astype(np.uint8)


def make_quadrant_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """The class signal (a yellow disk) sits in the top-left quadrant; a blue distractor elsewhere.

    Both classes carry the same distractor, so a model that learnt the task has its evidence for
    'signal' in the top-left quadrant, and nowhere else.
    """
    rng = np.random.default_rng(seed)
    for name in QUADRANT_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_quadrant_image(rng, name == "signal")).save(root / name / f"img_{i:03d}.png")
    return root


def train_quadrant_run(root: Path, epochs: int, per_class: int) -> Path:
    make_quadrant_folder(root / "images", per_class)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    config = FinetuneConfig(split=str(root / "split.csv"), model="convnext_tiny", weights="none", epochs=epochs,
                            batch_size=8, lr=1e-3, image_size=SIDE, randaugment_ops=0, workers=0, seed=3,
                            label_smoothing=0.0).validate()
    finetune(config, out=str(root / "run"))
    return root / "run"


def first_image(images: Path) -> Path:
    return sorted((images / QUADRANT_CLASSES[0]).glob("*.png"))[0]
