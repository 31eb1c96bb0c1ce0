"""One registry for ACC-ViT and the torchvision baselines: name -> model, weights and head swap.

``create_model(name, num_classes, weights)`` builds every model the same way: random initialisation
(``weights=None``), torchvision's ImageNet-1K weights (``weights="imagenet"``, baselines only), or a
local state dict (``weights=PATH``). The 1000-class ImageNet head is replaced by a fresh one when
``num_classes`` differs, so fine-tuning code never touches model internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import acc_vit
from accvit_med.models.weights import load_into, load_torchvision_state_dict, read_state_dict, torchvision_weights_file

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class ModelInfo:
    """What other parts of the toolkit need to know about a model without building it."""

    name: str
    family: str  # "accvit", "swin", "convnext" or "maxvit"
    head: str  # module name of the final Linear layer (the one swapped for a new class count)
    gradcam_layer: str  # module whose output Grad-CAM uses: the last stage, at 1/32 resolution
    gradcam_channels_last: bool  # True when that output is (B, H, W, C) (Swin), else (B, C, H, W)
    imagenet_weights: str | None  # torchvision weights enum member, None when there are none
    fixed_image_size: bool  # True when the input size is fixed at construction (image_size kwarg)


_ACCVIT_INFO = dict(family="accvit", head="classifier.5", gradcam_layer="stages.3",
                    gradcam_channels_last=False, imagenet_weights=None, fixed_image_size=False)

_MODELS: dict[str, ModelInfo] = {
    **{name: ModelInfo(name=name, **_ACCVIT_INFO) for name in acc_vit.CONFIGS},
    # Swin's last LayerNorm works on (B, H, W, C) tokens, before the permute to channels-first.
    "swin_t": ModelInfo("swin_t", "swin", "head", "norm", True, "Swin_T_Weights", False),
    "convnext_tiny": ModelInfo("convnext_tiny", "convnext", "classifier.2", "features.7", False,
                               "ConvNeXt_Tiny_Weights", False),
    # torchvision's MaxViT sizes its partitions at construction: image_size goes to input_size.
    "maxvit_t": ModelInfo("maxvit_t", "maxvit", "classifier.5", "blocks.3", False, "MaxVit_T_Weights", True),
}


def list_models() -> list[str]:
    """Every model name ``create_model`` accepts: the six ACC-ViT variants, then the baselines."""
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    """Family, head and Grad-CAM layer of a model; UserError listing the names if unknown."""
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}")
    return _MODELS[name]


def imagenet_weights_enum(name: str):
    """The torchvision ``Weights`` member behind ``weights="imagenet"``, or None for ACC-ViT."""
    info = model_info(name)
    if info.imagenet_weights is None:
        return None
    import torchvision.models as tvm

    return getattr(tvm, info.imagenet_weights).IMAGENET1K_V1


def imagenet_weights_cached(name: str) -> bool:
    """True when ``weights="imagenet"`` would be served from the local torch.hub cache."""
    weights = imagenet_weights_enum(name)
    return weights is not None and torchvision_weights_file(weights).is_file()


def _check_image_size(name: str, image_size: int | None) -> None:
    if image_size is not None and model_info(name).family in ("accvit", "maxvit"):
        acc_vit.check_image_size(image_size, image_size)


def _build(name: str, num_classes: int, drop_path_rate: float | None, image_size: int | None) -> nn.Module:
    info = model_info(name)
    if info.family == "accvit":
        return acc_vit.build_acc_vit(name, num_classes=num_classes, drop_path_rate=drop_path_rate)
    import torchvision.models as tvm

    builder: Callable[..., nn.Module] = getattr(tvm, name)
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if info.fixed_image_size and image_size is not None:
        kwargs["input_size"] = (image_size, image_size)
    model = builder(weights=None, **kwargs)
    if drop_path_rate is not None:
        _rescale_stochastic_depth(model, drop_path_rate)
    return model


def _rescale_stochastic_depth(model: nn.Module, rate: float) -> None:
    """Set the deepest layer's stochastic depth to ``rate``, keeping the builder's linear ramp.

    torchvision's ``swin_t``/``maxvit_t`` builders fix ``stochastic_depth_prob`` themselves, so it
    cannot be passed; every baseline ramps it linearly with depth, so rescaling is exact.
    """
    from torchvision.ops import StochasticDepth

    layers = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    deepest = max((m.p for m in layers), default=0.0)
    for module in layers:
        module.p = module.p / deepest * rate if deepest > 0 else 0.0


def create_model(
    name: str,
    num_classes: int = IMAGENET_CLASSES,
    weights: str | Path | None = None,
    *,
    drop_path_rate: float | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head.

    weights: None (random initialisation), ``"imagenet"`` (torchvision's IMAGENET1K_V1 through the
    torch.hub cache; baselines only) or the path of a ``.pth``/``.safetensors`` state dict.
    drop_path_rate: stochastic depth (default: the model's own). image_size: the side of the square
    input the model will see (default 224); ACC-ViT and MaxViT need a multiple of 224.
    """
    info = model_info(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    _check_image_size(name, image_size)
    if weights is None:
        return _build(name, num_classes, drop_path_rate, image_size)
    if str(weights) == "imagenet":
        enum = imagenet_weights_enum(name)
        if enum is None:
            raise UserError(
                f"{name} has no public ImageNet weights; pass weights=PATH to a .pth or .safetensors "
                "state dict instead (e.g. a checkpoint from your own ImageNet pre-training)"
            )
        model = _build(name, IMAGENET_CLASSES, drop_path_rate, image_size)
        model.load_state_dict(load_torchvision_state_dict(enum))
        if num_classes != IMAGENET_CLASSES:
            reset_classifier(model, num_classes)
        return model
    model = _build(name, num_classes, drop_path_rate, image_size)
    load_into(model, read_state_dict(weights), info.head, source=str(weights))
    return model


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the final Linear layer of any registry model."""
    family = _family_of(model)
    name = next(info.head for info in _MODELS.values() if info.family == family)
    return name, model.get_submodule(name)


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final Linear layer by a fresh ``num_classes``-way one (trunc normal 0.02, zero bias)."""
    name, old = classifier_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    nn.init.trunc_normal_(new.weight, std=0.02)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def _family_of(model: nn.Module) -> str:
    import torchvision.models as tvm

    families = {acc_vit.ACCViT: "accvit", tvm.SwinTransformer: "swin", tvm.ConvNeXt: "convnext", tvm.MaxVit: "maxvit"}
    for cls, family in families.items():
        if isinstance(model, cls):
            return family
    raise ValueError(f"{type(model).__name__} is not a registry model")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
