"""Class probabilities of a fine-tuned run on new images, optionally with test-time augmentation.

Test-time augmentation averages the softmax over flipped views of each image:
``none`` (the image only), ``h`` (+ horizontal flip) or ``hv`` (+ horizontal and + vertical flip).
Horizontal flips are safe for all three published tasks (skin lesions, fundus photographs of left
and right eyes, ultrasound fans are left-right symmetric); a vertical flip turns an ultrasound
upside down (the probe is always on top), so it is opt-in. Training used no flips (RandAugment
only, appendix C.2), so TTA may help or hurt: measure it on the validation set before reporting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_text
from accvit_med.interpret.run import LoadedRun
from accvit_med.progress import progress_bar, show_progress
from accvit_med.reports.predictions import predictions_csv

TTA_CHOICES = ("none", "h", "hv")


@dataclass
class ImagePredictions:
    """Softmax probabilities (n, k) of ``paths`` over ``classes``, rows in ``paths`` order."""

    paths: list[str]
    probabilities: np.ndarray
    classes: list[str]

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def to_csv(self) -> str:
        """``path,pred,prob_<class>...``: the predictions CSV without a label column."""
        return predictions_csv(self.paths, None, self.predicted, self.probabilities, self.classes)

    def write_csv(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_csv())


def tta_views(images: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a (B, 3, H, W) batch whose softmax is averaged."""
    views = [images]
    if tta in ("h", "hv"):
        views.append(images.flip(-1))
    if tta == "hv":
        views.append(images.flip(-2))
    return views


@torch.inference_mode()
def predict_tensors(run: LoadedRun, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Mean softmax (B, k) of ``run``'s model over the TTA views of a normalised batch."""
    if tta not in TTA_CHOICES:
        raise UserError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got '{tta}'")
    images = images.to(run.device)
    views = tta_views(images, tta)
    # Double precision for the average, as the training code writes its probabilities.
    return torch.stack([run.model(v).double().softmax(dim=1) for v in views]).mean(dim=0).cpu()


def predict_images(
    run: LoadedRun,
    paths: Sequence[str | os.PathLike],
    tta: str = "none",
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
) -> ImagePredictions:
    """Probabilities for every image of ``paths`` (in order), with the run's preprocessing."""
    if tta not in TTA_CHOICES:
        raise UserError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got '{tta}'")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    dataset = run.dataset(paths)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        pin_memory=run.device.type == "cuda")
    rows: list[torch.Tensor] = []
    with progress_bar(show_progress(progress)) as bar:
        task = bar.add_task(f"predict {run.label}", total=len(dataset))
        for images, _, _ in loader:
            rows.append(predict_tensors(run, images, tta))
            bar.advance(task, len(images))
    probabilities = torch.cat(rows).numpy() if rows else np.zeros((0, len(run.classes)))
    return ImagePredictions([str(p) for p in paths], probabilities, list(run.classes))


def default_workers() -> int:
    """Data-loading processes when none are asked for: decoding is the bottleneck on CPU."""
    return min(4, os.cpu_count() or 1)
