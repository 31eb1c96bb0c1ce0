"""ACC-ViT's variants as data: the rows of Table 2 and Table 8, the input-size rule and which
variants can inherit MaxViT-T's weights, everything that is decided without building a network.

It imports no torch, so that checking a run's model choice (``accvit-med sweep`` checks a whole
plan) stays fast; :mod:`.acc_vit` builds the networks from these configs and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass

from accvit_med.errors import UserError

# Every stage halves the map; the stem and stage 1 together divide by 4 and stage 1's widest
# dilation (8) must still leave whole 7x7 windows: 224 = 4 * 8 * 7. Deeper stages give the same bound.
SIZE_MULTIPLE = 224

# Design-study switches (appendix E, Table 8); the final model is ("atrous", "gated", "shared").
CONV_BLOCKS = ("mbconv", "atrous")  # MaxViT's MBConv, or the atrous inverted residual of eq. 3
FUSIONS = ("mean", "gated")  # how parallel branches are combined: averaged, or by a softmax gate
MLPS = ("per_branch", "shared", "convnext")  # one MLP per attention branch, one per layer, or a ConvNeXt block


@dataclass(frozen=True)
class ACCViTConfig:
    """One row of Table 2 (and, through the last three fields, one row of Table 8).

    Args:
        stem_channels: width of the two stem convolutions.
        channels: width of the four stages.
        depths: layers per stage.
        head_dim: channels per attention head.
        drop_path_rate: default stochastic depth of the deepest layer (the pre-training recipe's value).
        conv_block: ``"atrous"`` (eq. 3) or ``"mbconv"`` (MaxViT's MBConv; Table 8, row 1).
        fusion: ``"gated"`` (section 2.2, 2.4) or ``"mean"`` (branches averaged; Table 8, rows 1-3).
        mlp: ``"shared"`` (section 2.3), ``"per_branch"`` (Table 8, rows 1-2) or ``"convnext"``
            (the MLP replaced by a ConvNeXt block, as MOAT; Table 8, row 5).
    """

    stem_channels: int
    channels: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    head_dim: int
    drop_path_rate: float
    conv_block: str = "atrous"
    fusion: str = "gated"
    mlp: str = "shared"

    # The design-choice strings are checked here, once; the modules take what they mean (``gated``,
    # a convolution builder, a layer class from :mod:`.design_study`).
    def __post_init__(self) -> None:
        for field, value, allowed in (("conv_block", self.conv_block, CONV_BLOCKS),
                                      ("fusion", self.fusion, FUSIONS), ("mlp", self.mlp, MLPS)):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")
        if len(self.channels) != 4 or len(self.depths) != 4 or min(self.depths) < 1:
            raise ValueError(f"channels and depths need four stages of at least one layer, got "
                             f"{self.channels} and {self.depths}")
        if any(c % self.head_dim for c in self.channels):
            raise ValueError(f"every stage width {self.channels} must be a multiple of head_dim {self.head_dim}")

    @property
    def is_final_design(self) -> bool:
        """True for the paper's final ACC-ViT (the only design the fast implementation covers)."""
        return (self.conv_block, self.fusion, self.mlp) == ("atrous", "gated", "shared")

    @property
    def gated(self) -> bool:
        """True when parallel branches are fused by a softmax gate (sections 2.2, 2.4)."""
        return self.fusion == "gated"


# Table 2. Head size 32 as MaxViT, 16 in pico and femto (their 32/48-channel stages would otherwise
# have one or two heads; 16 reproduces the counts). Stochastic depth follows the pre-training recipe
# (femto/pico 0, nano 0.1, tiny 0.2, small 0.3); base is not in the recipe and takes MaxViT-B's 0.4.
CONFIGS: dict[str, ACCViTConfig] = {
    "accvit_femto": ACCViTConfig(32, (32, 64, 128, 256), (1, 2, 4, 1), 16, 0.0),
    "accvit_pico": ACCViTConfig(48, (48, 96, 192, 384), (1, 2, 4, 1), 16, 0.0),
    "accvit_nano": ACCViTConfig(64, (64, 128, 256, 512), (1, 2, 4, 1), 32, 0.1),
    "accvit_tiny": ACCViTConfig(64, (64, 128, 256, 512), (2, 3, 6, 2), 32, 0.2),
    "accvit_small": ACCViTConfig(64, (96, 192, 384, 768), (2, 3, 6, 2), 32, 0.3),
    "accvit_base": ACCViTConfig(64, (96, 192, 384, 768), (4, 6, 14, 2), 32, 0.4),
}

# Table 8 (appendix E): the design roadmap on nano's widths and depths, in the paper's order. The
# fourth row is accvit_nano itself. What each row's counts say is in docs/design-study.md.
_NANO = CONFIGS["accvit_nano"]
DESIGN_STUDY: dict[str, ACCViTConfig] = {
    "accvit_nano_mbconv": ACCViTConfig(64, _NANO.channels, _NANO.depths, 32, 0.1, "mbconv", "mean", "per_branch"),
    "accvit_nano_atrous_conv": ACCViTConfig(64, _NANO.channels, _NANO.depths, 32, 0.1, "atrous", "mean", "per_branch"),
    "accvit_nano_shared_mlp": ACCViTConfig(64, _NANO.channels, _NANO.depths, 32, 0.1, "atrous", "mean", "shared"),
    "accvit_nano_convnext_mlp": ACCViTConfig(64, _NANO.channels, _NANO.depths, 32, 0.1, "atrous", "gated", "convnext"),
}

ALL_CONFIGS: dict[str, ACCViTConfig] = {**CONFIGS, **DESIGN_STUDY}


def check_image_size(height: int, width: int, multiple: int = SIZE_MULTIPLE, model: str = "ACC-ViT") -> None:
    """The one input-size rule: ValueError unless both sides are positive multiples of ``multiple``.

    ACC-ViT's forward pass applies it with 224; the registry applies it to every model whose row
    names a multiple (torchvision's MaxViT: 32 x 7, the same 224) and turns it into a UserError.
    """
    if height > 0 and width > 0 and not height % multiple and not width % multiple:
        return
    why = " so that the dilated maps split into 7x7 windows" if multiple == SIZE_MULTIPLE else ""
    raise ValueError(
        f"{model} cannot take {height}x{width} images: height and width must be multiples of "
        f"{multiple} ({multiple}, {2 * multiple}, {3 * multiple}, ...){why}; resize or crop the images to "
        f"e.g. {multiple}x{multiple} or {2 * multiple}x{2 * multiple} (--image-size {multiple})"
    )


# torchvision's MaxViT-T, the source of weight inheritance (:mod:`.inheritance` maps its tensors).
MAXVIT_DEPTHS = (2, 2, 5, 2)
MAXVIT_CHANNELS = (64, 128, 256, 512)
MAXVIT_HEAD_DIM = 32


def check_inheritable(name: str) -> None:
    """Raise a one-line UserError unless ``name`` can inherit MaxViT-T's weights."""
    config = CONFIGS.get(name)
    if config is None:
        # Baselines load their own ImageNet weights; the design-study variants change the layers the
        # mapping is written for, so they would inherit only in part.
        raise UserError(f"--weights maxvit_t initialises the ACC-ViT variants of Table 2 only, not {name}; "
                        "use --weights imagenet for a baseline, --weights none or PATH otherwise")
    if any(c > m for c, m in zip(config.channels, MAXVIT_CHANNELS)):
        raise UserError(
            f"{name} is wider than MaxViT-T, so it cannot inherit its weights; use accvit_tiny or accvit_nano "
            "(inherited), distil into it with `accvit-med pretrain --teacher maxvit_t`, or pass --weights PATH/none"
        )
