"""The table behind ``accvit-med models``: every registry model with its size and cost.

Parameters and FLOPs are computed, not cached: models are built on the meta device (shapes only,
no memory, no arithmetic), so all nine take a few seconds and the numbers can never go stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from accvit_med.models.flops import count_flops
from accvit_med.models.registry import (
    count_parameters,
    create_model,
    imagenet_weights_cached,
    list_models,
    model_info,
)


@dataclass(frozen=True)
class ModelSummary:
    name: str
    family: str
    params: int  # with a 1000-class head
    gflops: float  # fvcore conventions (the paper's), one image
    weights: str  # what weights="imagenet" gives


def summarize_models(image_size: int = 224) -> list[ModelSummary]:
    rows = []
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name, image_size=image_size)
        info = model_info(name)
        if info.imagenet_weights is None:
            weights = "none public (weights=PATH)"
        else:
            weights = "ImageNet-1K (cached)" if imagenet_weights_cached(name) else "ImageNet-1K (download)"
        rows.append(ModelSummary(name, info.family, count_parameters(model), count_flops(model, image_size) / 1e9, weights))
    return rows
