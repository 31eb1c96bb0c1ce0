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
    design_study: bool = False  # one of Table 8's variants


def summarize_models(image_size: int = 224, design_study: bool = False) -> list[ModelSummary]:
    """One row per registry model (with ``design_study``, Table 8's variants too)."""
    rows = []
    for name in list_models(design_study=design_study):
        with torch.device("meta"):
            model = create_model(name, image_size=image_size)
        info = model_info(name)
        if info.family == "accvit":
            weights = _inherited_weights(name)
        else:
            weights = "ImageNet-1K (cached)" if imagenet_weights_cached(name) else "ImageNet-1K (download)"
        rows.append(ModelSummary(name, info.family, count_parameters(model), count_flops(model, image_size) / 1e9,
                                 weights, info.design_study))
    return rows


def _inherited_weights(name: str) -> str:
    """What weights="imagenet" gives an ACC-ViT: MaxViT-T's weights inherited, where it can take them."""
    from accvit_med.errors import UserError
    from accvit_med.models.inheritance import check_inheritable

    try:
        check_inheritable(name)
    except UserError:
        return "none public (weights=PATH)"
    where = "cached" if imagenet_weights_cached("maxvit_t") else "download"
    return f"inherited from maxvit_t ({where})"
