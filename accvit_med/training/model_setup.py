"""The network of a run: model creation with its weights, and their provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.training.model_choice import check_model_choice  # noqa: F401 (re-exported; its home has no torch)
from accvit_med.training.recipe import FinetuneConfig

FROM_SCRATCH_WARNING = (
    "[bold yellow]WARNING: training from scratch (--weights none).[/] The paper fine-tuned "
    "ImageNet-pretrained backbones; numbers from random initialisation are not comparable to it."
)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers (whose state dicts differ)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def build_model(
    config: FinetuneConfig,
    num_classes: int,
    model_factory: Optional[Callable[[int], nn.Module]] = None,
) -> tuple[nn.Module, dict]:
    """The network with ``num_classes`` outputs and the record of where its weights came from
    (``config.json``'s ``weights``: spec, file, sha256 and, for an inherited ACC-ViT, the summary; the
    caller has checked the choice: :func:`check_model_choice`)."""
    if model_factory is not None:
        model = model_factory(num_classes)
        record = {"spec": "custom model factory", "file": None, "sha256": None}
    else:
        from accvit_med.models import create

        spec = config.weights
        created = create(config.model, num_classes=num_classes, weights=None if spec == "none" else spec,
                         image_size=config.image_size)
        model, record = created.model, created.weights.to_record()
    if config.batchnorm_momentum is not None:
        set_batchnorm_momentum(model, config.batchnorm_momentum)
    if config.grad_checkpointing:
        _enable_checkpointing(model)
    return model, record


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> int:
    """Set every BatchNorm layer's running-statistics momentum; returns how many layers it set.

    The momentum only changes how training updates the running statistics, never the weights'
    shapes, so a run trained with it loads like any other run of its registry model.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def _enable_checkpointing(model: nn.Module) -> None:
    from accvit_med.models.activation_checkpointing import enable_activation_checkpointing

    # A network without registry blocks would silently train without the memory saving asked for.
    if enable_activation_checkpointing(model) == 0:
        raise UserError(
            f"--grad-checkpointing found no ACC-ViT, Swin, ConvNeXt or MaxViT block in {type(model).__name__}; "
            "drop the option for this network"
        )


def head_reuse_warning(weights: str, classes: list[str]) -> Optional[str]:
    """A warning when ``weights`` is one of our checkpoints whose head is reused for other class names.

    The head is kept whenever the class counts match (see models.weights.load_into), so a run
    started from a 3-class BUSI checkpoint on another 3-class set would silently map "benign" to
    whatever the new first class is. The names only exist in our own checkpoints (``classes``).
    """
    if weights in ("imagenet", "none") or Path(weights).suffix not in (".pt", ".pth"):
        return None
    try:
        stored = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # read_state_dict already reported unreadable files; nothing more to say
        return None
    names = stored.get("classes") if isinstance(stored, dict) else None
    if not isinstance(names, list) or len(names) != len(classes) or list(names) == list(classes):
        return None
    return (f"warning: the head of '{weights}' was trained for classes {', '.join(map(str, names))} and is "
            f"reused for {', '.join(classes)} (same count, other names or order); its outputs start "
            "meaning the new classes only through fine-tuning")
