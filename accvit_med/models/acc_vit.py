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
``conv_block``, ``fusion`` and ``mlp`` fields; its layers live in :mod:`.design_study`
(``docs/design-study.md``). :class:`ACCViT` carries timm's model contract (``get_classifier``,
``reset_classifier``, ``no_weight_decay``, ``set_grad_checkpointing``, ``forward_features``,
``forward_head``), so training code asks the model instead of restating its layout. Bad arguments
raise ValueError; the registry and the CLI turn them into the one-line user error.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation
from torchvision.ops.stochastic_depth import StochasticDepth

# The modules of each section and the variants as data (no torch) are re-exported here, where they
# always were.
from accvit_med.models.atrous_attention import AtrousAttention, AttentionBranch  # noqa: F401
from accvit_med.models.atrous_conv import (  # noqa: F401
    CONV_DILATIONS,
    EXPANSION,
    SQUEEZE_RATIO,
    AtrousInvertedResidual,
    BatchNorm,
    dilated_depthwise_conv,
)
from accvit_med.models.configs import (  # noqa: F401
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

# Dilation rates of the attention branches per stage (appendix A.2); rate 1 is the plain window.
STAGE_RATES: tuple[tuple[int, ...], ...] = ((1, 2, 4, 8), (1, 2, 4), (1, 2), (1,))
MLP_RATIO = 4


def token_mlp(channels: int) -> nn.Sequential:
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
    branches: it runs once, on the fused map. The design study's other layers (Table 8) subclass
    this one in :mod:`.design_study` and replace :meth:`build_mlp` and ``forward``.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        stride: 2 for a stage's first layer (halves the map), else 1.
        head_dim: channels per attention head.
        rates: dilation rates of the attention branches (appendix A.2).
        drop_path: stochastic depth probability of every residual branch in the layer.
        gated: fuse parallel branches by a gate (the paper's) rather than averaging them.
        conv: builder of the convolution module, called as ``conv(in_channels, out_channels, stride,
            drop_path, gated=gated)`` (default: the class's ``conv_layer``, eq. 3).
    """

    # The layer's modules; the fast subclasses swap in implementations with the same parameters.
    conv_layer: Callable[..., nn.Module] = AtrousInvertedResidual
    attention_layer = AtrousAttention

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, head_dim: int, rates: tuple[int, ...],
        drop_path: float, gated: bool = True, conv: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.conv = (conv or self.conv_layer)(in_channels, out_channels, stride, drop_path, gated=gated)
        self.attention = self.attention_layer(out_channels, head_dim, rates, gated=gated)
        self.build_mlp(out_channels, rates, drop_path)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def build_mlp(self, channels: int, rates: tuple[int, ...], drop_path: float) -> None:
        """The modules after the attention: its LayerNorm and the shared MLP."""
        self.attention_norm = nn.LayerNorm(channels)
        self.mlp = token_mlp(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Attention and MLP work per pixel on channels-last tokens; with channels_last memory format
        # the permutes are free views.
        tokens = self.conv(x).permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self.attention_norm(self.attention(tokens)))
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
        _check_num_classes(num_classes)
        rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {rate}")
        self.config = config
        self.fast = fast and config.is_final_design
        layer_type, stem_norm = _layer_type(config, self.fast)
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
        drop_paths = iter(rate * i / max(total - 1, 1) for i in range(total))
        stages = []
        in_channels = config.stem_channels
        for channels, depth, rates in zip(config.channels, config.depths, STAGE_RATES):
            stages.append(nn.Sequential(*(
                layer_type(in_channels if i == 0 else channels, channels, 2 if i == 0 else 1, config.head_dim,
                           rates, next(drop_paths), gated=config.gated)
                for i in range(depth)
            )))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        width = config.channels[-1]
        # MaxViT's top: LayerNorm -> Linear -> Tanh -> Linear without bias (the last is the head).
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

    def layers(self) -> list[ACCViTLayer]:
        """Every layer of the four stages, in order (the units of activation checkpointing)."""
        return [layer for stage in self.stages for layer in stage]

    def get_classifier(self) -> nn.Linear:
        """The final Linear layer (the one :meth:`reset_classifier` replaces)."""
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``num_classes``-way final Linear layer (trunc normal 0.02, no bias, as MaxViT's);
        the rest of the classifier top and the features are kept."""
        _check_num_classes(num_classes)
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes, bias=False).to(old.weight.device, old.weight.dtype)
        nn.init.trunc_normal_(new.weight, std=0.02)
        self.classifier[-1] = new

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters trained without weight decay: normalisation layers' scales and
        shifts, biases, and the relative position bias tables (torchvision's recipe for MaxViT)."""
        names = set()
        for module_name, module in self.named_modules():
            for leaf, _ in module.named_parameters(recurse=False):
                if isinstance(module, _NORMS) or leaf in ("bias", "relative_position_bias_table"):
                    names.add(f"{module_name}.{leaf}" if module_name else leaf)
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer's activations in the backward pass (state-dict keys unchanged)."""
        from accvit_med.models.activation_checkpointing import checkpoint_blocks, release_blocks

        (checkpoint_blocks if enable else release_blocks)(self.layers())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images -> the last stage's ``(B, C, H/32, W/32)`` map."""
        check_image_size(x.shape[-2], x.shape[-1])
        # channels_last keeps convolutions fast on CPU and makes the token views free.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The classifier top on a feature map; ``pre_logits``: stop before the final Linear layer."""
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")


def _layer_type(config: ACCViTConfig, fast: bool) -> tuple[Callable[..., nn.Module], type[nn.Module]]:
    """The layer builder and the stem's BatchNorm of ``config``."""
    if fast:
        # Imported here: the fast modules subclass the ones above.
        from accvit_med.models.fast import FastACCViTLayer, FastBatchNorm

        return FastACCViTLayer, FastBatchNorm
    if config.is_final_design:
        return ACCViTLayer, BatchNorm
    from accvit_med.models.design_study import layer_type

    return layer_type(config), BatchNorm


def build_acc_vit(name: str, num_classes: int = 1000, drop_path_rate: float | None = None, fast: bool = True) -> ACCViT:
    """ACC-ViT variant ``name`` (Table 2 or the Table 8 design study); ValueError if unknown."""
    if name not in ALL_CONFIGS:
        raise ValueError(f"unknown ACC-ViT variant {name!r}; choose one of {', '.join(ALL_CONFIGS)}")
    return ACCViT(ALL_CONFIGS[name], num_classes=num_classes, drop_path_rate=drop_path_rate, fast=fast)
