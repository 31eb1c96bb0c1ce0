"""Mixup and CutMix on a batch, one of the two per batch (p = 0.5), as torchvision's reference.

Both pair each image with its neighbour in the batch (``roll(1)``), draw ``lam ~ Beta(alpha, alpha)``
and return soft targets ``lam * onehot(y) + (1 - lam) * onehot(y_rolled)``. CutMix pastes a box of
the neighbour and recomputes ``lam`` from the box's clipped area, so the label weights always match
the pixels. Label smoothing is applied by the loss (``CrossEntropyLoss(label_smoothing=...)`` on the
soft targets), as in torchvision's ``train.py``.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def mixup(
    images: torch.Tensor, targets: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each image (and its soft target) with its neighbour: ``lam * x + (1 - lam) * x_rolled``."""
    mixed = images.roll(1, 0).mul(1.0 - lam).add_(images, alpha=lam)
    return mixed, targets.roll(1, 0).mul(1.0 - lam).add_(targets, alpha=lam)


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A box of area about ``(1 - lam) * H * W`` centred uniformly at random, clipped to the image."""
    centre_x = int(torch.randint(width, (1,)))
    centre_y = int(torch.randint(height, (1,)))
    ratio = 0.5 * math.sqrt(1.0 - lam)
    half_w, half_h = int(ratio * width), int(ratio * height)
    x1, y1 = max(centre_x - half_w, 0), max(centre_y - half_h, 0)
    x2, y2 = min(centre_x + half_w, width), min(centre_y + half_h, height)
    return x1, y1, x2, y2


def cutmix(images: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of each neighbour into each image; weight the targets by the pasted area."""
    height, width = images.shape[-2:]
    x1, y1, x2, y2 = cutmix_box(height, width, lam)
    mixed = images.clone()
    mixed[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
    kept = 1.0 - (x2 - x1) * (y2 - y1) / (width * height)
    return mixed, targets.roll(1, 0).mul(1.0 - kept).add_(targets, alpha=kept)


class MixupCutmix:
    """Mix a batch with mixup or cutmix (chosen with p = 0.5 when both alphas are positive).

    ``__call__(images, labels)`` takes integer labels and returns ``(images, soft_targets)`` whose
    rows sum to 1. With both alphas zero it returns the batch unchanged with one-hot targets.
    Randomness comes from torch's global RNG, which the engine seeds per rank and epoch.
    """

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
        self.num_classes = num_classes
        self.choices = [(fn, alpha) for fn, alpha in ((mixup, mixup_alpha), (cutmix, cutmix_alpha)) if alpha > 0]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = F.one_hot(labels, self.num_classes).to(images.dtype)
        if not self.choices:
            return images, targets
        fn, alpha = self.choices[int(torch.randint(len(self.choices), (1,)))]
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        return fn(images, targets, lam)
