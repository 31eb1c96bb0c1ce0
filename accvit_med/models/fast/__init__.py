"""Speed-tuned ACC-ViT modules: same parameters, state-dict keys and results as the reference.

``ACCViT(config, fast=True)`` (the default; ``create_model(..., fast=False)`` for the reference)
builds its layers from :class:`FastACCViTLayer`, whose convolution and attention are subclasses of
the modules in :mod:`accvit_med.models.acc_vit` that override only ``forward``. Everything here
exists for speed (docs/performance.md has the measurements, docs/speed-log.md the history):
hand-written autograd Functions, per-branch CPU / stacked CUDA attention, in-place inference,
BatchNorm folding and oneDNN's private fused convolution + GELU (self-checked before use,
:mod:`accvit_med.models.fast.depthwise`).
The tests compare each path with the reference in float64, outputs and gradients.
"""

from __future__ import annotations

from torch import nn

from accvit_med.models.acc_vit import ACCViTLayer
from accvit_med.models.fast.attention import FastAtrousAttention
from accvit_med.models.fast.conv import FastAtrousInvertedResidual, FastBatchNorm


class FastACCViTLayer(ACCViTLayer):
    """:class:`ACCViTLayer` built from the fast convolution and attention (same forward)."""

    conv_layer = FastAtrousInvertedResidual
    attention_layer = FastAtrousAttention


def reference_path_modules(model: nn.Module) -> list[nn.Module]:
    """The fast modules of ``model``, each with a ``use_reference`` switch to the reference forward."""
    return [m for m in model.modules() if isinstance(m, (FastAtrousAttention, FastAtrousInvertedResidual))]


def set_reference_attention(model: nn.Module, enabled: bool = True) -> None:
    """Run every fast module of ``model`` through the reference forward (or back): the graph the
    paper describes, which :func:`accvit_med.models.flops.count_flops` counts."""
    for module in reference_path_modules(model):
        module.use_reference = enabled


__all__ = ["FastACCViTLayer", "FastAtrousAttention", "FastAtrousInvertedResidual", "FastBatchNorm",
           "reference_path_modules", "set_reference_attention"]
