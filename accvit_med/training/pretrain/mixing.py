"""Mixup and CutMix on a batch, one of the two per batch (p = 0.5), as torchvision's reference.

torchvision's own ``transforms.v2.MixUp`` and ``CutMix`` do the work: both pair each image with its
neighbour in the batch (``roll(1)``), draw ``lam ~ Beta(alpha, alpha)`` and return soft targets
``lam * onehot(y) + (1 - lam) * onehot(y_rolled)``; CutMix recomputes ``lam`` from the pasted box's
clipped area, so the label weights always match the pixels. Unlike torchvision's ``train.py`` (which
mixes in the collate function) we mix on the device after loading. Label smoothing is applied by
the loss (``CrossEntropyLoss(label_smoothing=...)`` on the soft targets), as in ``train.py``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.transforms import v2


class MixupCutmix:
    """Mix a batch with mixup or cutmix (chosen with p = 0.5 when both alphas are positive).

    ``__call__(images, labels)`` takes integer labels and returns ``(images, soft_targets)`` whose
    rows sum to 1. With both alphas zero it returns the batch unchanged with one-hot targets.
    Randomness comes from torch's global RNG, which the engine seeds per rank and epoch.

    Args:
        num_classes: the number of classes (width of the soft targets).
        mixup_alpha: Beta parameter of mixup; 0 turns it off.
        cutmix_alpha: Beta parameter of cutmix; 0 turns it off.
    """

    def __init__(self, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
        self.num_classes = num_classes
        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        self.transform = None if not choices else choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return images, F.one_hot(labels, self.num_classes).to(images.dtype)
        mixed, targets = self.transform(images, labels)
        return mixed, targets.to(images.dtype)
