"""Grad-CAM (Selvaraju et al., 2017) for every model family of the registry, batched.

For a class c and the feature maps A (K channels, h x w) of a target layer, Grad-CAM weighs each
channel by the spatial mean of d y_c / d A_k and keeps the positive part of the weighted sum:

    L_c = ReLU( sum_k  mean_ij(d y_c / d A_k[i, j]) * A_k )

then upsamples L_c to the input size and scales each map to [0, 1]. The target layer is the last
stage, before pooling (``ModelInfo.gradcam``): ACC-ViT ``stages.3``, MaxViT ``blocks.3``,
ConvNeXt ``features.7`` (all (B, C, h, w)) and Swin's final ``norm``, whose output is channels-last
(B, h, w, C) and is permuted here. Written out (30 lines) rather than taken from the ``grad-cam``
package, which would pull in OpenCV for one weighted sum.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from accvit_med.errors import UserError


@dataclass(frozen=True)
class CamTarget:
    """Where to take the feature maps: a module name of the model and the layout of its output."""

    layer: str
    channels_last: bool = False
    # Tokens (B, N, C) (ViT, DeiT): drop the first prefix_tokens, the rest is the square patch grid.
    prefix_tokens: Optional[int] = None


def registry_target(model_name: str) -> CamTarget:
    """The registry's Grad-CAM layer of ``model_name`` (UserError listing the names if unknown)."""
    from accvit_med.models.registry import gradcam_layer

    layer = gradcam_layer(model_name)
    return CamTarget(layer.path, layer.channels_last, layer.prefix_tokens)


def _token_grid(tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    patches = tokens[:, prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise UserError(f"{patches.shape[1]} patch tokens do not form a square grid; Grad-CAM needs square images")
    return patches.reshape(patches.shape[0], side, side, patches.shape[2])


@dataclass
class CamBatch:
    """Grad-CAM maps (B, H, W) in [0, 1] at the input size, the explained classes and the softmax."""

    maps: torch.Tensor
    classes: torch.Tensor
    probabilities: torch.Tensor


@contextmanager
def _capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs of ``module`` during the block; the hook is removed however the block ends."""
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        outputs.append(output)

    handle = module.register_forward_hook(keep)
    try:
        yield outputs
    finally:
        handle.remove()
        outputs.clear()  # drop the activations (and their graph) with the hook


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target: CamTarget,
    class_index: Optional[int | Sequence[int] | torch.Tensor] = None,
) -> CamBatch:
    """Grad-CAM of a batch of normalised images (B, 3, H, W) for ``model`` in eval mode.

    class_index: one class for the whole batch, one per image, or None for each image's predicted
    class. Samples do not interact in eval mode, so one backward pass of the summed class scores
    gives every image's own gradient.
    """
    if model.training:
        raise ValueError("grad_cam needs the model in eval mode (dropout and batch statistics off)")
    try:
        layer = model.get_submodule(target.layer)
    except AttributeError:
        raise UserError(f"the model has no layer '{target.layer}' for Grad-CAM; pass an existing module name") from None
    with torch.enable_grad(), _capture_output(layer) as outputs:
        logits = model(images)
        if not outputs:
            raise UserError(f"layer '{target.layer}' did not run in the forward pass; choose another Grad-CAM layer")
        activations = outputs[-1]
        if class_index is None:
            chosen = logits.argmax(dim=1)
        else:
            chosen = torch.as_tensor(class_index, device=logits.device).long().expand(logits.shape[0])
        score = logits.gather(1, chosen[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, activations)
    if target.prefix_tokens is not None:  # ViT: (B, N, C) tokens -> (B, h, w, C) patch grid
        activations, gradients = (_token_grid(t, target.prefix_tokens) for t in (activations, gradients))
    if target.channels_last or target.prefix_tokens is not None:  # Swin: (B, h, w, C) -> (B, C, h, w)
        activations, gradients = activations.permute(0, 3, 1, 2), gradients.permute(0, 3, 1, 2)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()
    cams = F.interpolate(cams.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cams.amax(dim=(1, 2), keepdim=True)
    # An all-zero map (no positive evidence) stays zero instead of dividing by zero.
    cams = torch.where(peak > 0, cams / peak.clamp_min(torch.finfo(cams.dtype).tiny), torch.zeros_like(cams))
    return CamBatch(cams.cpu(), chosen.detach().cpu(), logits.detach().float().softmax(dim=1).cpu())
