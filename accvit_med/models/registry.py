"""One registry for ACC-ViT and the torchvision baselines: name -> model, weights and head swap.

``create_model(name, num_classes, weights)`` builds every model the same way: random initialisation
(``weights=None``), torchvision's ImageNet-1K weights (``weights="imagenet"``, baselines only), or a
local state dict (``weights=PATH``). The 1000-class ImageNet head is replaced by a fresh one when
``num_classes`` differs, so fine-tuning code never touches model internals.

Importing it imports no torch: what is known without building a model (names, families, input
sizes, the weight checks) serves the plan checks of ``accvit-med sweep``, so torch, torchvision,
:mod:`.acc_vit` and :mod:`.weights` are imported by the functions that build or load a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from accvit_med.errors import UserError
from accvit_med.models import configs

if TYPE_CHECKING:
    from torch import nn

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class ModelInfo:
    """What other parts of the toolkit need to know about a model without building it.

    This is the one home of per-family knowledge: training, pre-training, reports, Grad-CAM and the
    CLI ask it instead of restating it.
    """

    name: str
    family: str  # "accvit", "swin", "convnext" or "maxvit"
    head: str  # module name of the final Linear layer (the one swapped for a new class count)
    gradcam_layer: str  # module whose output Grad-CAM uses: the last stage, at 1/32 resolution
    gradcam_channels_last: bool  # True when that output is (B, H, W, C) (Swin), else (B, C, H, W)
    imagenet_weights: str | None  # torchvision weights enum member, None when there are none
    fixed_image_size: bool  # True when the input size is fixed at construction (image_size kwarg)
    display_name: str = ""  # the paper's spelling, e.g. "ACC-ViT-T", "MaxViT-T"
    # Input sides must be multiples of this (None: any size). ACC-ViT: 4 (stem + stage 1) x 8
    # (widest dilation) x 7 (window); torchvision's MaxViT: 32 x 7, the same 224.
    size_multiple: int | None = None
    # Residual block classes ("module:Class"), the units of activation checkpointing.
    block_types: tuple[str, ...] = ()
    # Parameter leaf names that are embeddings and get no weight decay (beside norms and biases).
    no_weight_decay: tuple[str, ...] = ()
    design_study: bool = False  # one of Table 8's variants (appendix E), not a Table 2 model


_ACCVIT_SIZES = {"femto": "F", "pico": "P", "nano": "N", "tiny": "T", "small": "S", "base": "B"}
_ACCVIT_INFO = dict(family="accvit", head="classifier.5", gradcam_layer="stages.3",
                    gradcam_channels_last=False, imagenet_weights=None, fixed_image_size=False,
                    size_multiple=configs.SIZE_MULTIPLE, block_types=("accvit_med.models.acc_vit:ACCViTLayer",),
                    no_weight_decay=("relative_position_bias_table",))


def _accvit_display_name(name: str) -> str:
    size, _, variant = name.removeprefix("accvit_").partition("_")
    return f"ACC-ViT-{_ACCVIT_SIZES[size]}" + (f" ({variant.replace('_', ' ')})" if variant else "")


_MODELS: dict[str, ModelInfo] = {
    **{name: ModelInfo(name=name, display_name=_accvit_display_name(name), **_ACCVIT_INFO) for name in configs.CONFIGS},
    # Swin's last LayerNorm works on (B, H, W, C) tokens, before the permute to channels-first.
    "swin_t": ModelInfo("swin_t", "swin", "head", "norm", True, "Swin_T_Weights", False, "Swin-T",
                        block_types=("torchvision.models.swin_transformer:SwinTransformerBlock",),
                        no_weight_decay=("relative_position_bias_table",)),
    "convnext_tiny": ModelInfo("convnext_tiny", "convnext", "classifier.2", "features.7", False,
                               "ConvNeXt_Tiny_Weights", False, "ConvNeXt-T",
                               block_types=("torchvision.models.convnext:CNBlock",)),
    # torchvision's MaxViT sizes its partitions at construction: image_size goes to input_size.
    "maxvit_t": ModelInfo("maxvit_t", "maxvit", "classifier.5", "blocks.3", False, "MaxVit_T_Weights", True,
                          "MaxViT-T", size_multiple=224, block_types=("torchvision.models.maxvit:MaxVitLayer",),
                          no_weight_decay=("relative_position_bias_table",)),
    # Table 8's design study on nano's widths and depths (accvit_nano is its fourth row).
    **{name: ModelInfo(name=name, display_name=_accvit_display_name(name), design_study=True, **_ACCVIT_INFO)
       for name in configs.DESIGN_STUDY},
}


def list_models(design_study: bool = False) -> list[str]:
    """Every model name ``create_model`` accepts: the six ACC-ViT variants, then the baselines;
    with ``design_study``, also Table 8's ACC-ViT-nano variants (appendix E)."""
    return [name for name, info in _MODELS.items() if design_study or not info.design_study]


def model_info(name: str) -> ModelInfo:
    """Family, head and Grad-CAM layer of a model; UserError listing the names if unknown."""
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}")
    return _MODELS[name]


def known_family(name: str) -> str | None:
    """The family of registry model ``name``, or None for a name the registry does not know."""
    info = _MODELS.get(name)
    return None if info is None else info.family


def check_image_size(name: str, image_size: int) -> None:
    """UserError unless model ``name`` can take ``image_size`` x ``image_size`` inputs."""
    info = model_info(name)
    multiple = info.size_multiple
    if multiple is None:
        return
    if info.family == "accvit":  # ACC-ViT's own message (it also guards the forward pass)
        configs.check_image_size(image_size, image_size)
    elif image_size <= 0 or image_size % multiple:
        raise UserError(f"{name} cannot take {image_size}x{image_size} images: height and width must be multiples "
                        f"of {multiple} ({multiple}, {2 * multiple}, ...); resize or crop the images")


def residual_block_types() -> tuple[type[nn.Module], ...]:
    """The residual block classes of every family (imported on demand)."""
    import importlib

    paths = dict.fromkeys(path for info in _MODELS.values() for path in info.block_types)
    return tuple(getattr(importlib.import_module(module), cls) for module, cls in (p.split(":") for p in paths))


def no_weight_decay_leaf_names() -> frozenset[str]:
    """Parameter leaf names that some family treats as an embedding (no weight decay)."""
    return frozenset(leaf for info in _MODELS.values() for leaf in info.no_weight_decay)


def imagenet_weights_enum(name: str):
    """The torchvision ``Weights`` member behind ``weights="imagenet"``, or None for ACC-ViT."""
    info = model_info(name)
    if info.imagenet_weights is None:
        return None
    import torchvision.models as tvm

    return getattr(tvm, info.imagenet_weights).IMAGENET1K_V1


def imagenet_weights_cached(name: str) -> bool:
    """True when ``weights="imagenet"`` would be served from the local torch.hub cache."""
    from accvit_med.models.weights import torchvision_weights_file

    weights = imagenet_weights_enum(name)
    return weights is not None and torchvision_weights_file(weights).is_file()


def _build(name: str, num_classes: int, drop_path_rate: float | None, image_size: int | None,
           fast: bool = True) -> nn.Module:
    info = model_info(name)
    if info.family == "accvit":
        from accvit_med.models import acc_vit

        return acc_vit.build_acc_vit(name, num_classes=num_classes, drop_path_rate=drop_path_rate, fast=fast)
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
    fast: bool = True,
) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head.

    weights: None (random initialisation), ``"imagenet"`` (torchvision's IMAGENET1K_V1 through the
    torch.hub cache; for ACC-ViT the same as ``"maxvit_t"``), ``"maxvit_t"`` (ACC-ViT initialised from
    torchvision's MaxViT-T, see :mod:`.inheritance`) or the path of a ``.pth``/``.safetensors`` state dict.
    drop_path_rate: stochastic depth (default: the model's own). image_size: the side of the square
    input the model will see (default 224); ACC-ViT and MaxViT need a multiple of 224. fast: ACC-ViT
    only: the speed-tuned modules of :mod:`accvit_med.models.fast` (default) or, with False, the
    reference graph of :mod:`accvit_med.models.acc_vit` (same parameters and state-dict keys, like
    timm's ``fused_attn``); the design-study variants always use the reference.
    """
    from accvit_med.models.weights import load_into, load_torchvision_state_dict, read_state_dict

    info = model_info(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if image_size is not None:
        check_image_size(name, image_size)
    if weights is None:
        return _build(name, num_classes, drop_path_rate, image_size, fast)
    if inherits_maxvit(name, weights):
        return _inherit(name, num_classes, drop_path_rate, default=str(weights) == "imagenet")
    if str(weights) == "imagenet" or (str(weights) == "maxvit_t" and info.family == "maxvit"):
        enum = imagenet_weights_enum(name)
        if enum is None:
            raise UserError(
                f"{name} has no public ImageNet weights; pass weights=PATH to a .pth or .safetensors "
                "state dict instead (e.g. a checkpoint from your own ImageNet pre-training)"
            )
        model = _build(name, IMAGENET_CLASSES, drop_path_rate, image_size, fast)
        model.load_state_dict(load_torchvision_state_dict(enum))
        if num_classes != IMAGENET_CLASSES:
            reset_classifier(model, num_classes)
        return model
    model = _build(name, num_classes, drop_path_rate, image_size, fast)
    load_into(model, read_state_dict(weights), info.head, source=str(weights))
    return model


def inherits_maxvit(name: str, weights) -> bool:
    """True when ``weights`` asks for an ACC-ViT initialised from MaxViT-T (``maxvit_t``, or the default
    ``imagenet`` for ACC-ViT); UserError for ``maxvit_t`` on a model that cannot take it."""
    spec = None if weights is None else str(weights)
    if spec == "maxvit_t" and model_info(name).family == "maxvit":
        return False  # maxvit_t itself: its own ImageNet weights
    if spec == "maxvit_t" or (spec == "imagenet" and model_info(name).family == "accvit"):
        configs.check_inheritable(name)
        return True
    return False


def _inherit(name: str, num_classes: int, drop_path_rate: float | None, default: bool) -> nn.Module:
    import torchvision.models as tvm

    from accvit_med.models.inheritance import inherit_from_maxvit, print_note
    from accvit_med.models.weights import load_torchvision_state_dict

    source = load_torchvision_state_dict(tvm.MaxVit_T_Weights.IMAGENET1K_V1)
    model, summary = inherit_from_maxvit(name, source, num_classes, drop_path_rate=drop_path_rate)
    print_note(summary, default)
    model.inheritance = summary.to_dict()  # read by the run's config.json (training.modelling)
    return model


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the final Linear layer of any registry model."""
    family = _family_of(model)
    name = next(info.head for info in _MODELS.values() if info.family == family)
    return name, model.get_submodule(name)


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final Linear layer by a fresh ``num_classes``-way one (trunc normal 0.02, zero bias)."""
    from torch import nn

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

    from accvit_med.models import acc_vit

    families = {acc_vit.ACCViT: "accvit", tvm.SwinTransformer: "swin", tvm.ConvNeXt: "convnext", tvm.MaxVit: "maxvit"}
    for cls, family in families.items():
        if isinstance(model, cls):
            return family
    raise ValueError(f"{type(model).__name__} is not a registry model")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
