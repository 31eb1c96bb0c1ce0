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
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from accvit_med.errors import UserError
from accvit_med.interpret.results import TTA_CHOICES, ImagePredictions, check_tta, default_workers
from accvit_med.interpret.run import LoadedRun
from accvit_med.progress import progress_bar, show_progress

__all__ = ["TTA_CHOICES", "ImagePredictions", "default_workers", "predict_ensemble", "predict_images",
           "predict_tensors", "tta_views"]


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
    check_tta(tta)
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
    check_tta(tta)
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



def predict_ensemble(members, paths: Sequence[str | os.PathLike], *, checkpoint: str = "best", device: str = "auto",
                     tta: str = "none", batch_size: int = 32, workers: int = 0, calibrate: bool = True,
                     progress: bool = True) -> tuple[ImagePredictions, str, list[str]]:
    """The mean probabilities of several runs (``training.ensemble.Member`` objects, one model in memory at a
    time), each with ``tta`` and, when ``calibrate`` and every run has validation predictions, its
    temperature; returns the predictions (in the first run's class order), a title and notes."""
    from accvit_med.interpret.run import load_run
    from accvit_med.training.ensemble import ensemble_label, mean_probabilities, with_temperatures

    members, notes = with_temperatures(members, calibrate)
    classes: list[str] = []
    probabilities = []
    for member in members:
        loaded = load_run(member.run, checkpoint=checkpoint, device=device)
        result = predict_images(loaded, paths, tta=tta, batch_size=batch_size, workers=workers, progress=progress)
        classes = classes or list(result.classes)
        probabilities.append(result.probabilities[:, [result.classes.index(c) for c in classes]])
        del loaded
    mean = mean_probabilities(probabilities, [m.temperature for m in members])
    label, _ = ensemble_label(members)
    how = "calibrated" if all(m.temperature is not None for m in members) else "raw"
    title = f"{label} ({checkpoint}.pt, {len(members)} runs, {how} probabilities, TTA {tta})"
    return ImagePredictions([str(p) for p in paths], mean, classes), title, notes
