"""Atrous inverted residual convolution (Ibtehaz et al., section 2.4, eq. 3) and its building blocks.

Written as the paper describes it, on the pattern of torchvision's MaxViT MBConv; the choices the
text leaves open are in each docstring (docs/models.md lists them). :mod:`.fast.conv` subclasses
it with the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation
from torchvision.ops.stochastic_depth import StochasticDepth

CONV_DILATIONS = (1, 2, 3)  # eq. 3
EXPANSION = 4  # 1x1 expansion of the inverted residual, as MaxViT's MBConv
SQUEEZE_RATIO = 0.25  # SE bottleneck relative to the block's output channels, as MaxViT


class BatchNorm(nn.BatchNorm2d):
    """MaxViT's BatchNorm: eps 1e-3 and slow running statistics (momentum 0.01), as TorchVision's."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-3, momentum=0.01)


def fuse_weights(logits: torch.Tensor | None, branches: int, like: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of the gate's logits over branches, or equal weights 1/branches without a gate."""
    if logits is not None:
        return torch.softmax(logits, dim=dim)
    shape = list(like.shape)
    shape[dim] = branches
    return like.new_full(shape, 1.0 / branches)


def dilated_depthwise_conv(channels: int, dilation: int, stride: int) -> nn.Conv2d:
    """Depthwise 3x3 convolution with dilation ``dilation`` (padding keeps the size), no bias."""
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=dilation, dilation=dilation,
                     groups=channels, bias=False)


class AtrousInvertedResidual(nn.Module):
    """Eq. 3 (section 2.4): 1x1 expand x4 -> three depthwise 3x3 (dilation 1, 2, 3) fused by a gate -> 1x1.

    Choices (they reproduce Table 2 and Table 8): as MaxViT's MBConv, a BatchNorm pre-norm, the
    expansion to 4x the OUTPUT channels with BN and GELU, the stride in the depthwise convolutions and
    an avg-pool + 1x1 shortcut when the layer downsamples. Each depthwise branch has its own BN, GELU
    and squeeze-and-excitation (MaxViT's, bottleneck = output channels / 4); there is no SE after the
    fusion. The gate is a per-pixel linear layer (a 1x1 convolution) from the expanded features to
    one weight per branch, softmaxed over branches. When the layer downsamples, the gate reads the
    expanded map through a 3x3/2 average pool so that it sees the pixels the branches produce.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map (the expansion is 4x these).
        stride: 1, or 2 to halve the map (the first layer of a stage).
        drop_path: stochastic depth probability of the residual branch.
        gated: fuse the branches by the gate (the paper's); False averages them (Table 8 rows 2-3).
    """

    # Building blocks; the fast subclass swaps in speed-tuned ones with the same parameters.
    norm_layer = BatchNorm
    depthwise_layer = staticmethod(dilated_depthwise_conv)

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float,
                 gated: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        mid_channels = out_channels * EXPANSION
        squeeze_channels = int(out_channels * SQUEEZE_RATIO)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            pool = [nn.AvgPool2d(3, stride=stride, padding=1)] if stride == 2 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, 1))
        norm = self.norm_layer
        self.pre_norm = norm(in_channels)
        self.expand = Conv2dNormActivation(
            in_channels, mid_channels, 1, norm_layer=norm, activation_layer=nn.GELU, inplace=None
        )
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(self.depthwise_layer(mid_channels, dilation, stride), norm(mid_channels), nn.GELU()),
                SqueezeExcitation(mid_channels, squeeze_channels, activation=nn.SiLU),
            )
            for dilation in CONV_DILATIONS
        )
        self.gate_pool = nn.AvgPool2d(3, stride=stride, padding=1) if stride == 2 else nn.Identity()
        self.gate = nn.Conv2d(mid_channels, len(CONV_DILATIONS), 1) if gated else None
        self.project = nn.Conv2d(mid_channels, out_channels, 1)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def branch_weights(self, expanded: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H', W')`` weights of the three branches, summing to 1 at every output pixel."""
        pooled = self.gate_pool(expanded)
        logits = None if self.gate is None else self.gate(pooled)
        return fuse_weights(logits, len(self.branches), pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expand(self.pre_norm(x))
        weights = self.branch_weights(expanded)
        fused = sum(weights[:, i : i + 1] * branch(expanded) for i, branch in enumerate(self.branches))
        return self.shortcut(x) + self.drop_path(self.project(fused))
