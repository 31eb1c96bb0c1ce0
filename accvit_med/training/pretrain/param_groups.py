"""AdamW parameter groups: weight decay on weights only.

No decay on normalisation layers (their scale and shift), on biases, or on relative position bias
tables (torchvision's ``--norm-weight-decay 0 --bias-weight-decay 0
--transformer-embedding-decay 0``). A parameter is recognised by the module that owns it (norms) or
by its own name (biases, position tables), exactly as torchvision's ``utils.set_weight_decay`` does,
and by the model's own answer where it gives one (``no_weight_decay()``, timm's contract).
"""

from __future__ import annotations

from torch import nn

from accvit_med.models.registry import no_weight_decay_leaf_names

NORM_CLASSES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
# Leaf parameter names that are embeddings rather than weights: torchvision's generic
# --transformer-embedding-decay keys, and what the registry says torchvision's tables are called.
# torchvision's ViT calls its table pos_embedding.
EMBEDDING_NAMES = (frozenset({"class_token", "position_embedding", "pos_embedding", "pos_embed"})
                   | no_weight_decay_leaf_names())


def _declared(model: nn.Module) -> set[str]:
    """The names that the model and its submodules give as their own ``no_weight_decay()`` (timm's
    contract, which ACC-ViT carries), qualified from the model's root."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{name}" if prefix else name for name in declared()}
    return names


def no_weight_decay_names(model: nn.Module) -> list[str]:
    """Qualified names of the trainable parameters that get no weight decay: those the model names
    itself (``no_weight_decay()``), and norms, biases and embedding tables by the rule above."""
    declared = _declared(model)
    names = []
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            name = f"{module_name}.{leaf}" if module_name else leaf
            if name in declared or isinstance(module, NORM_CLASSES) or leaf == "bias" or leaf in EMBEDDING_NAMES:
                names.append(name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``decay`` (weight_decay) and ``no_decay`` (0.0)."""
    excluded = set(no_weight_decay_names(model))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in excluded else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
