"""Atrous attention (Ibtehaz et al., sections 2.1-2.2): windowed attention on the map and its
dilated versions, fused by a gate. :mod:`.fast.attention` subclasses it with the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from accvit_med.models.atrous_conv import fuse_weights
from accvit_med.models.partition import (
    WINDOW,
    dilate,
    relative_position_index,
    undilate,
    window_departition,
    window_partition,
)


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
        gated: fuse the branches by the gate (the paper's); False averages them (Table 8 rows 1-3).
    """

    def __init__(self, channels: int, head_dim: int, rates: tuple[int, ...], gated: bool = True) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be a multiple of head_dim {head_dim}")
        if not rates or min(rates) < 1:
            raise ValueError(f"rates must be one or more positive dilation rates, got {rates}")
        self.rates = tuple(rates)
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.branches = nn.ModuleList(AttentionBranch(channels, head_dim) for _ in rates)
        self.gate = nn.Linear(channels, len(rates)) if len(rates) > 1 and gated else None

    def gate_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, branches)`` weights, summing to 1 over branches at every pixel."""
        logits = None if self.gate is None else self.gate(tokens)
        return fuse_weights(logits, len(self.rates), tokens, dim=-1)

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
