"""The table behind ``accvit-med models``: every registry model with its size and cost.

Parameters and FLOPs at 224 px are data (:mod:`accvit_med.models.model_table`), counted once when a
model is added or changed, because counting builds every model and runs the FLOP counter (several
seconds for the fifteen models; the list itself should cost no more than ``accvit-med info``). The
test suite recounts every row and compares (tests/test_models.py), so the table cannot go stale
unnoticed. Other input sizes, ``recount=True`` (``accvit-med models --recount``) and a model the
table does not hold yet are counted: the models are built on the meta device (shapes only, no
memory, no arithmetic). What ``weights="imagenet"`` gives depends on this machine's torch.hub
cache, so that column is always looked up.
"""

from __future__ import annotations

from dataclasses import dataclass

from accvit_med.models import model_table
from accvit_med.models.registry import imagenet_weights_cached, list_models, model_info


@dataclass(frozen=True)
class ModelSummary:
    name: str
    family: str
    params: int  # with a 1000-class head
    gflops: float  # fvcore conventions (the paper's), one image
    weights: str  # what weights="imagenet" gives
    design_study: bool = False  # one of Table 8's variants


def count_model(name: str, image_size: int = 224) -> tuple[int, int]:
    """(parameters with a 1000-class head, FLOPs of one image) of registry model ``name``, counted now."""
    import torch

    from accvit_med.models.flops import count_flops
    from accvit_med.models.registry import count_parameters, create_model

    with torch.device("meta"):
        model = create_model(name, image_size=image_size)
    return count_parameters(model), count_flops(model, image_size)


def summarize_models(image_size: int = 224, design_study: bool = False, recount: bool = False) -> list[ModelSummary]:
    """One row per registry model (with ``design_study``, Table 8's variants too).

    At 224 px the counts come from :data:`model_table.COUNTS_224` unless ``recount``.
    """
    rows = []
    for name in list_models(design_study=design_study):
        stored = model_table.COUNTS_224.get(name) if image_size == model_table.IMAGE_SIZE and not recount else None
        params, flops = stored if stored is not None else count_model(name, image_size)
        info = model_info(name)
        if info.family == "accvit":
            weights = _inherited_weights(name)
        else:
            weights = "ImageNet-1K (cached)" if imagenet_weights_cached(name) else "ImageNet-1K (download)"
        rows.append(ModelSummary(name, info.family, params, flops / 1e9, weights, info.design_study))
    return rows


def _inherited_weights(name: str) -> str:
    """What weights="imagenet" gives an ACC-ViT: MaxViT-T's weights inherited, where it can take them."""
    from accvit_med.errors import UserError
    from accvit_med.models.configs import check_inheritable

    try:
        check_inheritable(name)
    except UserError:
        return "none public (weights=PATH)"
    where = "cached" if imagenet_weights_cached("maxvit_t") else "download"
    return f"inherited from maxvit_t ({where})"
