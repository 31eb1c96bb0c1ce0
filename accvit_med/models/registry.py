"""One registry for ACC-ViT and the torchvision baselines: name -> model, weights and head swap.

``create_model(name, num_classes, weights)`` builds every model the same way: random initialisation
(``weights=None``), torchvision's ImageNet-1K weights (``weights="imagenet"``, baselines only), or a
local state dict (``weights=PATH``). The 1000-class ImageNet head is replaced by a fresh one when
``num_classes`` differs, so fine-tuning code never touches model internals. :func:`create` returns
the model with the provenance of its weights (:class:`~accvit_med.models.provenance.WeightsSource`).

A row (:class:`ModelInfo`) holds what a model cannot say about itself: ACC-ViT carries timm's
contract (``get_classifier``, ``reset_classifier``, ``no_weight_decay``, ``set_grad_checkpointing``),
torchvision's baselines do not, so their rows name their residual blocks and embedding tables.

Importing it imports no torch: what is known without building a model (names, families, input
sizes, the weight checks) serves the plan checks of ``accvit-med sweep``, so torch, torchvision,
:mod:`.acc_vit` and :mod:`.weights` are imported by the functions that build or load a model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from accvit_med.errors import UserError
from accvit_med.models import configs, zoo
from accvit_med.models.provenance import RANDOM, WeightsSource

if TYPE_CHECKING:
    from torch import nn

IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class CamLayer:
    """Where Grad-CAM takes a model's feature maps: the last stage at 1/32 resolution, before pooling."""

    path: str  # module path inside the model (``model.get_submodule(path)``)
    channels_last: bool = False  # True when its output is (B, H, W, C) (Swin), else (B, C, H, W)
    # Tokens (B, N, C) (ViT, DeiT): the first prefix_tokens (class, distillation, registers) are
    # dropped and the rest form the square patch grid. None: the output is a map.
    prefix_tokens: int | None = None


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What other parts of the toolkit need to know about a model without building it.

    This is the one home of per-family knowledge: training, pre-training, reports, Grad-CAM and the
    CLI ask it instead of restating it. The head is not here: every model's final Linear layer is
    found by :func:`classifier_head`.
    """

    name: str
    family: str  # "accvit", "swin", "convnext" or "maxvit"; "torchvision" or "timm" for a zoo model
    display_name: str  # the paper's spelling, e.g. "ACC-ViT-T", "MaxViT-T"
    gradcam: CamLayer | None = None  # None: found from the model itself (zoo.cam_layer)
    # torchvision weights enum; for a zoo model what weights="imagenet" loads (zoo.pretrained_weights)
    imagenet_weights: str | None = None
    fixed_image_size: bool = False  # True when the input size is fixed at construction (input_size kwarg)
    # Input sides must be multiples of this (None: any size); configs.check_image_size is the rule.
    size_multiple: int | None = None
    # torchvision models only (ACC-ViT answers itself): residual block classes ("module:Class"), the
    # units of activation checkpointing, and parameter leaf names that are embeddings (no weight decay).
    block_types: tuple[str, ...] = ()
    no_weight_decay: tuple[str, ...] = ()
    design_study: bool = False  # one of Table 8's variants (appendix E), not a Table 2 model


_ACCVIT_SIZES = {"femto": "F", "pico": "P", "nano": "N", "tiny": "T", "small": "S", "base": "B"}


def _accvit_row(name: str, design_study: bool = False) -> ModelInfo:
    size, _, variant = name.removeprefix("accvit_").partition("_")
    display = f"ACC-ViT-{_ACCVIT_SIZES[size]}" + (f" ({variant.replace('_', ' ')})" if variant else "")
    return ModelInfo(name=name, family="accvit", display_name=display, gradcam=CamLayer("stages.3"),
                     size_multiple=configs.SIZE_MULTIPLE, design_study=design_study)


_MODELS: dict[str, ModelInfo] = {
    **{name: _accvit_row(name) for name in configs.CONFIGS},
    # Swin's last LayerNorm works on (B, H, W, C) tokens, before the permute to channels-first.
    "swin_t": ModelInfo(name="swin_t", family="swin", display_name="Swin-T",
                        gradcam=CamLayer("norm", channels_last=True), imagenet_weights="Swin_T_Weights",
                        block_types=("torchvision.models.swin_transformer:SwinTransformerBlock",),
                        no_weight_decay=("relative_position_bias_table",)),
    "convnext_tiny": ModelInfo(name="convnext_tiny", family="convnext", display_name="ConvNeXt-T",
                               gradcam=CamLayer("features.7"), imagenet_weights="ConvNeXt_Tiny_Weights",
                               block_types=("torchvision.models.convnext:CNBlock",)),
    # torchvision's MaxViT sizes its partitions at construction: image_size goes to input_size.
    "maxvit_t": ModelInfo(name="maxvit_t", family="maxvit", display_name="MaxViT-T", gradcam=CamLayer("blocks.3"),
                          imagenet_weights="MaxVit_T_Weights", fixed_image_size=True, size_multiple=224,
                          block_types=("torchvision.models.maxvit:MaxVitLayer",),
                          no_weight_decay=("relative_position_bias_table",)),
    # Table 8's design study on nano's widths and depths (accvit_nano is its fourth row).
    **{name: _accvit_row(name, design_study=True) for name in configs.DESIGN_STUDY},
}


def list_models(design_study: bool = False) -> list[str]:
    """Every model name ``create_model`` accepts: the six ACC-ViT variants, then the baselines;
    with ``design_study``, also Table 8's ACC-ViT-nano variants (appendix E)."""
    return [name for name, info in _MODELS.items() if design_study or not info.design_study]


def model_info(name: str) -> ModelInfo:
    """Family, Grad-CAM layer and input-size rule of a model; UserError listing the names if unknown."""
    if name in _MODELS:
        return _MODELS[name]
    if zoo.parse(name) is not None:
        return _zoo_info(name)
    raise UserError(f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}, or any torchvision:<name> "
                    "or timm:<name> (`accvit-med models --zoo timm --filter TEXT`)")


@functools.lru_cache(maxsize=None)
def _zoo_info(name: str) -> ModelInfo:
    library, arch = zoo.parse(name)
    zoo.check_known(library, arch)
    return ModelInfo(name=name, family=library, display_name=name,
                     imagenet_weights=zoo.pretrained_weights(library, arch))


def known_family(name: str) -> str | None:
    """The family of registry model ``name`` (a zoo name: its library), or None for an unknown name."""
    info = _MODELS.get(name)
    if info is not None:
        return info.family
    try:
        parsed = zoo.parse(name)
    except UserError:
        return None
    return None if parsed is None else parsed[0]


def gradcam_layer(name: str) -> CamLayer:
    """Where Grad-CAM reads model ``name``: its row's layer, or for a zoo model the one found on it."""
    info = model_info(name)
    return info.gradcam if info.gradcam is not None else zoo.cam_layer(name)


def check_image_size(name: str, image_size: int) -> None:
    """UserError unless model ``name`` can take ``image_size`` x ``image_size`` inputs."""
    if model_info(name).family in zoo.ZOOS:
        return zoo.check_image_size(name, image_size)
    multiple = model_info(name).size_multiple
    if multiple is None:
        return
    try:
        configs.check_image_size(image_size, image_size, multiple, model=name)
    except ValueError as err:
        raise UserError(str(err)) from err


# Residual blocks of other torchvision classifiers (``torchvision:<name>``), checkpointed the same way.
_TORCHVISION_BLOCKS = (
    "torchvision.models.resnet:BasicBlock", "torchvision.models.resnet:Bottleneck",
    "torchvision.models.vision_transformer:EncoderBlock", "torchvision.models.efficientnet:MBConv",
    "torchvision.models.efficientnet:FusedMBConv", "torchvision.models.mobilenetv2:InvertedResidual",
    "torchvision.models.mobilenetv3:InvertedResidual",
)


def residual_block_types() -> tuple[type[nn.Module], ...]:
    """The residual block classes the torchvision rows name, and those of other torchvision
    classifiers (imported on demand)."""
    import importlib

    paths = dict.fromkeys([*(path for info in _MODELS.values() for path in info.block_types), *_TORCHVISION_BLOCKS])
    return tuple(getattr(importlib.import_module(module), cls) for module, cls in (p.split(":") for p in paths))


def no_weight_decay_leaf_names() -> frozenset[str]:
    """Parameter leaf names that a torchvision row treats as an embedding (no weight decay)."""
    return frozenset(leaf for info in _MODELS.values() for leaf in info.no_weight_decay)


def imagenet_weights_enum(name: str):
    """The torchvision ``Weights`` member behind ``weights="imagenet"``, or None for ACC-ViT and timm."""
    info = model_info(name)
    if info.imagenet_weights is None or info.family == "timm":
        return None
    import torchvision.models as tvm

    if info.family == "torchvision":
        return tvm.get_model_weights(zoo.parse(name)[1]).DEFAULT

    return getattr(tvm, info.imagenet_weights).IMAGENET1K_V1


def imagenet_weights_cached(name: str) -> bool:
    """True when ``weights="imagenet"`` would be served from the local torch.hub cache."""
    from accvit_med.models.weights import torchvision_weights_file

    info = model_info(name)
    if info.family == "timm":
        return info.imagenet_weights is not None and zoo.timm_weights_cached(info.imagenet_weights)
    weights = imagenet_weights_enum(name)
    return weights is not None and torchvision_weights_file(weights).is_file()


def _build(name: str, num_classes: int, drop_path_rate: float | None, image_size: int | None,
           fast: bool = True) -> nn.Module:
    info = model_info(name)
    if info.family == "accvit":
        from accvit_med.models import acc_vit

        return acc_vit.build_acc_vit(name, num_classes=num_classes, drop_path_rate=drop_path_rate, fast=fast)
    if info.family in zoo.ZOOS:
        return zoo.build(*zoo.parse(name), num_classes, drop_path_rate, image_size)
    import torchvision.models as tvm

    builder: Callable[..., nn.Module] = getattr(tvm, name)
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if info.fixed_image_size and image_size is not None:
        kwargs["input_size"] = (image_size, image_size)
    model = builder(weights=None, **kwargs)
    if drop_path_rate is not None:
        _rescale_stochastic_depth(model, drop_path_rate)
    return model


def _build_checked(name: str, num_classes: int, drop_path_rate: float | None, image_size: int | None,
                   fast: bool) -> nn.Module:
    """:func:`_build`, with the model code's ValueError for a bad argument as the one-line UserError."""
    try:
        return _build(name, num_classes, drop_path_rate, image_size, fast)
    except ValueError as err:
        raise UserError(f"cannot build {name}: {err}") from err


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


@dataclass(frozen=True)
class CreatedModel:
    """A model from :func:`create` and where its starting weights came from."""

    model: nn.Module
    weights: WeightsSource


def create_model(
    name: str,
    num_classes: int = IMAGENET_CLASSES,
    weights: str | Path | None = None,
    *,
    drop_path_rate: float | None = None,
    image_size: int | None = None,
    fast: bool = True,
) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head (the model of :func:`create`).

    weights: None (random initialisation), ``"imagenet"`` (torchvision's IMAGENET1K_V1 through the
    torch.hub cache; for ACC-ViT the same as ``"maxvit_t"``), ``"maxvit_t"`` (ACC-ViT initialised from
    torchvision's MaxViT-T, see :mod:`.inheritance`) or the path of a ``.pth``/``.safetensors`` state dict.
    drop_path_rate: stochastic depth (default: the model's own). image_size: the side of the square
    input the model will see (default 224); ACC-ViT and MaxViT need a multiple of 224. fast: ACC-ViT
    only: the speed-tuned modules of :mod:`accvit_med.models.fast` (default) or, with False, the
    reference graph of :mod:`accvit_med.models.acc_vit` (same parameters and state-dict keys, like
    timm's ``fused_attn``); the design-study variants always use the reference.
    """
    return create(name, num_classes, weights, drop_path_rate=drop_path_rate, image_size=image_size,
                  fast=fast).model


def create(
    name: str,
    num_classes: int = IMAGENET_CLASSES,
    weights: str | Path | None = None,
    *,
    drop_path_rate: float | None = None,
    image_size: int | None = None,
    fast: bool = True,
) -> CreatedModel:
    """:func:`create_model`'s model with the provenance of its weights (``config.json``'s record)."""
    from accvit_med.models.weights import load_into, load_torchvision_state_dict, read_state_dict

    info = model_info(name)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if image_size is not None:
        check_image_size(name, image_size)
    if weights is None:
        return CreatedModel(_build_checked(name, num_classes, drop_path_rate, image_size, fast), RANDOM)
    if inherits_maxvit(name, weights):
        return _inherit(name, num_classes, drop_path_rate, spec=str(weights))
    if str(weights) == "imagenet" and info.family in zoo.ZOOS:
        return _zoo_pretrained(name, num_classes, drop_path_rate, image_size)
    if str(weights) == "imagenet" or (str(weights) == "maxvit_t" and info.family == "maxvit"):
        from accvit_med.models.weights import torchvision_weights_file

        enum = imagenet_weights_enum(name)
        if enum is None:
            raise UserError(
                f"{name} has no public ImageNet weights; pass weights=PATH to a .pth or .safetensors "
                "state dict instead (e.g. a checkpoint from your own ImageNet pre-training)"
            )
        model = _build_checked(name, IMAGENET_CLASSES, drop_path_rate, image_size, fast)
        model.load_state_dict(load_torchvision_state_dict(enum))
        if num_classes != IMAGENET_CLASSES:
            reset_classifier(model, num_classes)
        return CreatedModel(model, WeightsSource("imagenet", Path(torchvision_weights_file(enum))))
    model = _build_checked(name, num_classes, drop_path_rate, image_size, fast)
    load_into(model, read_state_dict(weights), classifier_head(model)[0], source=str(weights))
    return CreatedModel(model, WeightsSource("path", Path(weights).expanduser().resolve()))


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


def _inherit(name: str, num_classes: int, drop_path_rate: float | None, spec: str) -> CreatedModel:
    import torchvision.models as tvm

    from accvit_med.models.inheritance import inherit_from_maxvit, print_note
    from accvit_med.models.weights import load_torchvision_state_dict, torchvision_weights_file

    enum = tvm.MaxVit_T_Weights.IMAGENET1K_V1
    source = load_torchvision_state_dict(enum)
    model, summary = inherit_from_maxvit(name, source, num_classes, drop_path_rate=drop_path_rate)
    print_note(summary, default=spec == "imagenet")
    return CreatedModel(model, WeightsSource(spec, Path(torchvision_weights_file(enum)), summary.to_dict()))


def _zoo_pretrained(name: str, num_classes: int, drop_path_rate: float | None, image_size: int | None) -> CreatedModel:
    if model_info(name).imagenet_weights is None:
        raise UserError(f"{name} has no pretrained weights in its library; pass --weights none or PATH")
    model, file, preprocessing = zoo.pretrained(*zoo.parse(name), drop_path_rate, image_size)
    if classifier_head(model)[1].out_features != num_classes:
        reset_classifier(model, num_classes)
    return CreatedModel(model, WeightsSource("imagenet", Path(file), preprocessing=preprocessing))


def classifier_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the final Linear layer: the model's ``get_classifier()`` where it has one
    (ACC-ViT, timm), else its last Linear layer (every torchvision classifier registers it last)."""
    from torch import nn

    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        return next(name for name, module in model.named_modules() if module is head), head
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer to use as its classifier head")
    return linears[-1]


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final Linear layer by a fresh ``num_classes``-way one (trunc normal 0.02, zero bias);
    a model with its own ``reset_classifier`` (ACC-ViT) does it itself."""
    from torch import nn

    if callable(getattr(model, "reset_classifier", None)):
        model.reset_classifier(num_classes)
        return model
    name, old = classifier_head(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    nn.init.trunc_normal_(new.weight, std=0.02)
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
