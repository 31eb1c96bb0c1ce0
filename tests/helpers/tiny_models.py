"""Small networks for tests that need a real model without the cost of training one.

``shrink_convnext`` makes the registry's ``convnext_tiny`` a genuine torchvision ConvNeXt of a few
thousand parameters, so the registry's target layer (``features.7``), run loading and the CLI are
the real code paths while training stays CPU-fast. ``GapNet`` is conv -> ReLU -> global average
pool -> linear, the one architecture where Grad-CAM has a closed form (CAM).
"""

from __future__ import annotations

import pytest
from torch import nn

from accvit_med.models import registry


def tiny_convnext(num_classes: int) -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 48, 1), CNBlockConfig(48, 64, 1), CNBlockConfig(64, None, 1)]
    return ConvNeXt(stages, stochastic_depth_prob=0.0, num_classes=num_classes)


def shrink_convnext(patch: pytest.MonkeyPatch) -> None:
    """``create_model("convnext_tiny")`` builds the tiny ConvNeXt while ``patch`` is active."""
    real_build = registry._build

    def build(name, num_classes, drop_path_rate, image_size, *args, **kwargs):
        if name == "convnext_tiny":
            return tiny_convnext(num_classes)
        return real_build(name, num_classes, drop_path_rate, image_size, *args, **kwargs)

    patch.setattr(registry, "_build", build)


class GapNet(nn.Module):
    """conv -> ReLU -> global average pool -> linear: Grad-CAM equals the closed-form CAM here."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))
