"""ACC-ViT: atrous attention + atrous inverted residual convolution (Ibtehaz et al., sections 2.1-2.5).

This module is the paper's architecture written as the paper describes it, one forward per module.
Its structure follows torchvision's ``models/maxvit.py`` (the implementation the authors built on):
a stem of two 3x3 convolutions, four stages whose first layer halves the resolution, and MaxViT's
classifier top. Each layer (:class:`ACCViTLayer`) is an atrous inverted residual convolution
(:class:`AtrousInvertedResidual`, section 2.4) followed by atrous attention (:class:`AtrousAttention`,
sections 2.1-2.2) and one MLP shared by the attention branches (section 2.3).

The paper leaves several details open. The choices below are the ones that reproduce the parameter
counts of its Table 2 and Table 8 (docs/models.md lists them); each module says which choice
it makes and where the counts cannot decide. There are no public weights, so nothing here has to
match a foreign state dict.

Speed lives apart, in :mod:`accvit_med.models.fast`: subclasses of these modules with the same
parameters and state-dict keys whose forward passes are exact reorganisations of the ones here
(fused attention across branches, hand-written backward passes, BatchNorm folding, in-place
inference). ``ACCViT(config, fast=True)`` (the default) builds those; ``fast=False`` builds this
reference graph, which the tests compare them against and on which FLOPs are counted.
Measurements: docs/performance.md; the history of the speed work: docs/speed-log.md.

The design study of appendix E (Table 8) is reachable through :class:`ACCViTConfig`'s
``conv_block``, ``fusion`` and ``mlp`` fields (see ``docs/design-study.md``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.maxvit import MBConv
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation
from torchvision.ops.stochastic_depth import StochasticDepth

# The variants as data (no torch) live in .configs; they are re-exported here, where they always were.
from accvit_med.models.configs import (
    ALL_CONFIGS,
    CONFIGS,
    CONV_BLOCKS,
    DESIGN_STUDY,
    FUSIONS,
    MLPS,
    SIZE_MULTIPLE,
    ACCViTConfig,
    check_image_size,
)
from accvit_med.models.partition import (
    WINDOW,
    dilate,
    relative_position_index,
    undilate,
    window_departition,
    window_partition,
)

# Dilation rates of the attention branches per stage (appendix A.2); rate 1 is the plain window.
STAGE_RATES: tuple[tuple[int, ...], ...] = ((1, 2, 4, 8), (1, 2, 4), (1, 2), (1,))
CONV_DILATIONS = (1, 2, 3)  # eq. 3
EXPANSION = 4  # 1x1 expansion of the inverted residual, as MaxViT's MBConv
SQUEEZE_RATIO = 0.25  # SE bottleneck relative to the block's output channels, as MaxViT
MLP_RATIO = 4

class BatchNorm(nn.BatchNorm2d):
    """MaxViT's BatchNorm: eps 1e-3 and slow running statistics (momentum 0.01), as TorchVision's."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-3, momentum=0.01)


def _branch_weights(logits: torch.Tensor | None, branches: int, like: torch.Tensor, dim: int) -> torch.Tensor:
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
        fusion: ``"gated"`` (the paper's) or ``"mean"`` (averaged branches, Table 8 rows 2-3: no gate).
    """

    # Building blocks; the fast subclass swaps in speed-tuned ones with the same parameters.
    norm_layer = BatchNorm
    depthwise_layer = staticmethod(dilated_depthwise_conv)

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float,
                 fusion: str = "gated") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
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
        self.gate = nn.Conv2d(mid_channels, len(CONV_DILATIONS), 1) if fusion == "gated" else None
        self.project = nn.Conv2d(mid_channels, out_channels, 1)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def branch_weights(self, expanded: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H', W')`` weights of the three branches, summing to 1 at every output pixel."""
        pooled = self.gate_pool(expanded)
        logits = None if self.gate is None else self.gate(pooled)
        return _branch_weights(logits, len(self.branches), pooled, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expand(self.pre_norm(x))
        weights = self.branch_weights(expanded)
        fused = sum(weights[:, i : i + 1] * branch(expanded) for i, branch in enumerate(self.branches))
        return self.shortcut(x) + self.drop_path(self.project(fused))


class AttentionBranch(nn.Module):
    """One branch of atrous attention (section 2.1) on ``(B, windows, 49, C)`` window tokens.

    Its own pre-LayerNorm, qkv, output projection and 7x7 relative position bias, as a MaxViT
    window attention: the parameter counts need all of them per branch.

    Args:
        channels: token width C.
        head_dim: channels per head (C must be a multiple).
    """

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be a multiple of head_dim {head_dim}")
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, self.heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(WINDOW), persistent=False)

    def relative_bias(self) -> torch.Tensor:
        """``(heads, 49, 49)`` additive attention bias."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b, g, length, channels = windows.shape
        qkv = self.qkv(self.norm(windows)).view(b, g, length, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, G, heads, L, head_dim)
        # Scaled by the head size, as scaled_dot_product_attention does. (TorchVision's MaxViT scales by
        # the channel count instead; with no public ACC-ViT weights to match, we keep the standard one.)
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-2, -1)) + self.relative_bias()
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.proj(out.transpose(2, 3).reshape(b, g, length, channels))


class AtrousAttention(nn.Module):
    """Sections 2.1-2.2: windowed attention on the map and its dilated versions, fused by a gate.

    Branch k dilates the map by ``rates[k]`` (appendix A.1's rearranges: pixels ``rate`` apart
    become neighbours), attends within 7x7 windows and undoes the dilation. Gate (2.2): softmax over
    branches of ONE linear layer (C -> branches) applied per pixel to the layer's input; one weight
    per branch and pixel (a per-channel gate would not match the counts). A single branch (stage 4)
    has no gate.

    Args:
        channels: token width C.
        head_dim: channels per head.
        rates: dilation rate of each branch (1 = the plain window).
        fusion: ``"gated"`` (the paper's) or ``"mean"`` (Table 8 rows 1-3: averaged, no gate).
    """

    def __init__(self, channels: int, head_dim: int, rates: tuple[int, ...], fusion: str = "gated") -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be a multiple of head_dim {head_dim}")
        if not rates or min(rates) < 1:
            raise ValueError(f"rates must be one or more positive dilation rates, got {rates}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.rates = tuple(rates)
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.branches = nn.ModuleList(AttentionBranch(channels, head_dim) for _ in rates)
        self.gate = nn.Linear(channels, len(rates)) if len(rates) > 1 and fusion == "gated" else None

    def gate_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, branches)`` weights, summing to 1 over branches at every pixel."""
        logits = None if self.gate is None else self.gate(tokens)
        return _branch_weights(logits, len(self.rates), tokens, dim=-1)

    def branch_outputs(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's projected attention output as ``(B, H, W, C)``, via the paper's einops ops."""
        x = tokens.permute(0, 3, 1, 2)
        height, width = x.shape[-2:]
        outputs = []
        for rate, branch in zip(self.rates, self.branches):
            attended = branch(window_partition(dilate(x, rate)))
            restored = undilate(window_departition(attended, height // rate, width // rate), rate)
            outputs.append(restored.permute(0, 2, 3, 1))
        return outputs

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> fused attention ``(B, H, W, C)`` (the weighted sum of the branches)."""
        weights = self.gate_weights(tokens)
        return sum(weights[..., i : i + 1] * out for i, out in enumerate(self.branch_outputs(tokens)))


def _mlp(channels: int) -> nn.Sequential:
    """MaxViT's MLP on tokens: pre-LayerNorm -> Linear (x4) -> GELU -> Linear."""
    return nn.Sequential(
        nn.LayerNorm(channels),
        nn.Linear(channels, channels * MLP_RATIO),
        nn.GELU(),
        nn.Linear(channels * MLP_RATIO, channels),
    )


class ACCViTLayer(nn.Module):
    """Atrous inverted residual convolution, then atrous attention with a shared MLP (2.3).

    Choices: the fused attention goes through one more LayerNorm before the residual add. The counts
    require exactly one LayerNorm(C) per layer beyond the branch pre-norms and the MLP's pre-norm but
    cannot say where; normalising the gated sum keeps its scale independent of how many branches
    there are and of how peaked the gate is. The MLP (ratio 4, GELU, pre-norm) is shared by all
    branches: it runs once, on the fused map.

    The design study's alternatives (Table 8): ``mlp="per_branch"`` gives every attention branch a
    MaxViT transformer layer of its own (residual attention, then residual MLP, no extra LayerNorm)
    and averages the branch outputs; ``mlp="convnext"`` replaces the shared MLP by torchvision's
    ConvNeXt block (7x7 depthwise conv -> LayerNorm -> MLP -> layer scale, with its residual).

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        stride: 2 for a stage's first layer (halves the map), else 1.
        head_dim: channels per attention head.
        rates: dilation rates of the attention branches (appendix A.2).
        drop_path: stochastic depth probability of every residual branch in the layer.
        conv_block: ``"atrous"`` (eq. 3) or ``"mbconv"`` (MaxViT's MBConv).
        fusion: ``"gated"`` or ``"mean"``, for the convolution and the attention branches alike.
        mlp: ``"shared"``, ``"per_branch"`` or ``"convnext"``.
    """

    # The layer's modules; the fast subclasses swap in implementations with the same parameters.
    conv_layer = AtrousInvertedResidual
    attention_layer = AtrousAttention

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, head_dim: int, rates: tuple[int, ...],
        drop_path: float, conv_block: str = "atrous", fusion: str = "gated", mlp: str = "shared",
    ) -> None:
        super().__init__()
        if conv_block not in CONV_BLOCKS:
            raise ValueError(f"conv_block must be one of {CONV_BLOCKS}, got {conv_block!r}")
        if mlp not in MLPS:
            raise ValueError(f"mlp must be one of {MLPS}, got {mlp!r}")
        if conv_block == "mbconv":
            # MaxViT's own MBConv (one 3x3 depthwise convolution, SE after it), as TorchVision builds it.
            self.conv: nn.Module = MBConv(
                in_channels, out_channels, EXPANSION, SQUEEZE_RATIO, stride,
                activation_layer=nn.GELU, norm_layer=BatchNorm, p_stochastic_dropout=drop_path,
            )
        else:
            self.conv = self.conv_layer(in_channels, out_channels, stride, drop_path, fusion=fusion)
        self.attention = self.attention_layer(out_channels, head_dim, rates, fusion=fusion)
        self.mlp_kind = mlp
        if mlp == "per_branch":
            self.branch_mlps = nn.ModuleList(_mlp(out_channels) for _ in rates)
        elif mlp == "convnext":
            self.convnext = CNBlock(out_channels, layer_scale=1e-6, stochastic_depth_prob=drop_path,
                                    norm_layer=partial(nn.LayerNorm, eps=1e-6))
        if mlp != "per_branch":
            self.attention_norm = nn.LayerNorm(out_channels)
        if mlp == "shared":
            self.mlp = _mlp(out_channels)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        # Attention and MLP work per pixel on channels-last tokens; with channels_last memory format
        # these permutes are free views.
        tokens = x.permute(0, 2, 3, 1)
        if self.mlp_kind == "per_branch":  # Table 8 rows 1-2: a transformer layer per branch, averaged
            weights = self.attention.gate_weights(tokens)
            fused = 0
            for i, (attended, mlp) in enumerate(zip(self.attention.branch_outputs(tokens), self.branch_mlps)):
                branch = tokens + self.drop_path(attended)
                fused = fused + weights[..., i : i + 1] * (branch + self.drop_path(mlp(branch)))
            return fused.permute(0, 3, 1, 2)
        tokens = tokens + self.drop_path(self.attention_norm(self.attention(tokens)))
        if self.mlp_kind == "convnext":  # Table 8 row 5: the block has its own residual and drop path
            return self.convnext(tokens.permute(0, 3, 1, 2))
        tokens = tokens + self.drop_path(self.mlp(tokens))
        return tokens.permute(0, 3, 1, 2)


class ACCViT(nn.Module):
    """Stem, four stages (first layer of each halves the map), MaxViT's classifier top.

    Args:
        config: a row of Table 2 (:data:`CONFIGS`) or Table 8 (:data:`DESIGN_STUDY`).
        num_classes: width of the classifier.
        drop_path_rate: stochastic depth of the deepest layer (default: the config's).
        fast: build the speed-tuned implementation of :mod:`accvit_med.models.fast` (same parameters,
            state-dict keys and results up to float rounding). Only the paper's final design has
            one; the design-study variants are always built as written here.
    """

    def __init__(self, config: ACCViTConfig, num_classes: int = 1000, drop_path_rate: float | None = None,
                 fast: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
        self.config = config
        self.fast = fast and config.is_final_design
        if self.fast:
            # Imported here: the fast modules subclass the ones above.
            from accvit_med.models.fast import FastACCViTLayer, FastBatchNorm

            layer_type, stem_norm = FastACCViTLayer, FastBatchNorm
        else:
            layer_type, stem_norm = ACCViTLayer, BatchNorm
        # MaxViT's stem: 3x3/2 conv + BN + GELU, then a plain 3x3 conv with bias.
        self.stem = nn.Sequential(
            Conv2dNormActivation(
                3, config.stem_channels, 3, stride=2, norm_layer=stem_norm, activation_layer=nn.GELU,
                bias=False, inplace=None,
            ),
            Conv2dNormActivation(
                config.stem_channels, config.stem_channels, 3, norm_layer=None, activation_layer=None, bias=True
            ),
        )
        # Stochastic depth grows linearly over all layers, as in MaxViT.
        total = sum(config.depths)
        drop_paths = [rate * i / max(total - 1, 1) for i in range(total)]
        stages = []
        in_channels = config.stem_channels
        for stage, (channels, depth, rates) in enumerate(zip(config.channels, config.depths, STAGE_RATES)):
            layers = [
                layer_type(
                    in_channels if i == 0 else channels, channels, 2 if i == 0 else 1, config.head_dim, rates,
                    drop_paths[sum(config.depths[:stage]) + i],
                    conv_block=config.conv_block, fusion=config.fusion, mlp=config.mlp,
                )
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*layers))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        width = config.channels[-1]
        # MaxViT's top: LayerNorm -> Linear -> Tanh -> Linear without bias.
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, num_classes, bias=False),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # MaxViT's initialisation (normal 0.02, zero biases); relative bias tables keep trunc normal.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_size(x.shape[-2], x.shape[-1])
        # channels_last keeps convolutions fast on CPU and makes the token views free.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))


def build_acc_vit(name: str, num_classes: int = 1000, drop_path_rate: float | None = None, fast: bool = True) -> ACCViT:
    """ACC-ViT variant ``name`` (Table 2 or the Table 8 design study); ValueError if unknown."""
    if name not in ALL_CONFIGS:
        raise ValueError(f"unknown ACC-ViT variant {name!r}; choose one of {', '.join(ALL_CONFIGS)}")
    return ACCViT(ALL_CONFIGS[name], num_classes=num_classes, drop_path_rate=drop_path_rate, fast=fast)
