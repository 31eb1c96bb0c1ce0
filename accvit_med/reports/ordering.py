"""The paper's orders: of models within a table, and of data sets across the report.

Table 1 lists the baselines first, Tables 5-7 put ACC-ViT first; ACC-ViT sizes follow the
registry (smallest first), so a new size needs no change here.
"""

from __future__ import annotations

from typing import Sequence

TABLE1_BASELINES = ("swin_t", "convnext_tiny", "maxvit_t")
DETAIL_BASELINES = ("convnext_tiny", "swin_t", "maxvit_t")
DATASET_ORDER = ("ham10000", "eyepacs", "busi")


def is_accvit(model: str) -> bool:
    """Registry models by their family; other labels (e.g. "ACC-ViT-T" typed by hand) by their prefix."""
    from accvit_med.models.registry import known_family

    family = known_family(model)
    if family is not None:
        return family == "accvit"
    return model.lower().replace("-", "_").startswith(("accvit", "acc_vit"))


def _accvit_sizes() -> list[str]:
    """The registry's ACC-ViT sizes in its order (e.g. femto, pico, nano, tiny, small, base)."""
    from accvit_med.models.registry import list_models, model_info

    return [name.removeprefix("accvit_") for name in list_models()
            if model_info(name).family == "accvit"]


def _accvit_rank(model: str) -> int:
    sizes = _accvit_sizes()
    size = model.lower().rsplit("_", 1)[-1]
    return sizes.index(size) if size in sizes else len(sizes)


def model_key(model: str, baselines: Sequence[str], accvit_first: bool) -> tuple:
    """Sort key: ACC-ViT sizes, then ``baselines`` in their order, then anything else by name."""
    if is_accvit(model):
        return (0 if accvit_first else 2, _accvit_rank(model), model)
    if model in baselines:
        return (1 if accvit_first else 0, baselines.index(model), model)
    return (3, 0, model)


def dataset_key(dataset: str) -> tuple:
    known = dataset.lower()
    return (0, DATASET_ORDER.index(known), "") if known in DATASET_ORDER else (1, 0, dataset)
