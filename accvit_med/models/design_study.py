"""The design study of appendix E (Table 8): the layers the paper compared before its final one.

:class:`~accvit_med.models.acc_vit.ACCViTLayer` is the final design; the rows of Table 8 change
three things, chosen by :class:`~accvit_med.models.configs.ACCViTConfig`'s ``conv_block``,
``fusion`` and ``mlp`` (checked there):

* ``conv_block="mbconv"``: MaxViT's own MBConv (one 3x3 depthwise convolution, SE after it), as
  torchvision builds it, instead of the atrous inverted residual (:func:`mbconv`).
* ``fusion="mean"``: parallel branches averaged, no gate (the modules' ``gated=False``).
* ``mlp="per_branch"``: every attention branch has a MaxViT transformer layer of its own (residual
  attention, then residual MLP, no extra LayerNorm) and the branch outputs are fused
  (:class:`PerBranchMLPLayer`); ``mlp="convnext"``: the shared MLP replaced by torchvision's
  ConvNeXt block, with its own residual (:class:`ConvNeXtMLPLayer`, as MOAT).

What each row's counts say is in docs/design-study.md. State-dict keys are those the variants
always had.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.maxvit import MBConv

from accvit_med.models.acc_vit import ACCViTLayer, token_mlp
from accvit_med.models.atrous_conv import EXPANSION, SQUEEZE_RATIO, BatchNorm
from accvit_med.models.configs import ACCViTConfig


def mbconv(in_channels: int, out_channels: int, stride: int, drop_path: float, gated: bool = True) -> MBConv:
    """MaxViT's MBConv in an ACC-ViT layer (Table 8, row 1); it has no branches, so ``gated`` is moot."""
    return MBConv(in_channels, out_channels, EXPANSION, SQUEEZE_RATIO, stride,
                  activation_layer=nn.GELU, norm_layer=BatchNorm, p_stochastic_dropout=drop_path)


class PerBranchMLPLayer(ACCViTLayer):
    """Table 8 rows 1-2: a transformer layer (attention + MLP, both residual) per attention branch."""

    def build_mlp(self, channels: int, rates: tuple[int, ...], drop_path: float) -> None:
        self.branch_mlps = nn.ModuleList(token_mlp(channels) for _ in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).permute(0, 2, 3, 1)
        weights = self.attention.gate_weights(tokens)
        fused = 0
        for i, (attended, mlp) in enumerate(zip(self.attention.branch_outputs(tokens), self.branch_mlps)):
            branch = tokens + self.drop_path(attended)
            fused = fused + weights[..., i : i + 1] * (branch + self.drop_path(mlp(branch)))
        return fused.permute(0, 3, 1, 2)


class ConvNeXtMLPLayer(ACCViTLayer):
    """Table 8 row 5: the shared MLP replaced by a ConvNeXt block (7x7 depthwise conv -> LayerNorm ->
    MLP -> layer scale), which brings its own residual and stochastic depth."""

    def build_mlp(self, channels: int, rates: tuple[int, ...], drop_path: float) -> None:
        self.convnext = CNBlock(channels, layer_scale=1e-6, stochastic_depth_prob=drop_path,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6))
        self.attention_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self.attention_norm(self.attention(tokens)))
        return self.convnext(tokens.permute(0, 3, 1, 2))


_LAYERS: dict[str, type[ACCViTLayer]] = {"shared": ACCViTLayer, "per_branch": PerBranchMLPLayer,
                                         "convnext": ConvNeXtMLPLayer}


def layer_type(config: ACCViTConfig) -> Callable[..., ACCViTLayer]:
    """The layer builder of a design-study ``config`` (same arguments as :class:`ACCViTLayer`)."""
    layer = _LAYERS[config.mlp]
    return partial(layer, conv=mbconv) if config.conv_block == "mbconv" else layer
