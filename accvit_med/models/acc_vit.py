"""ACC-ViT: atrous attention + atrous inverted residual convolution (Ibtehaz et al., sections 2.1-2.5).

Structure follows torchvision's ``models/maxvit.py`` (the paper's own starting point): a stem of two
3x3 convolutions, four stages whose first layer halves the resolution, and MaxViT's classifier top.
Each layer is an :class:`AtrousInvertedResidual` followed by an :class:`AtrousAttention` layer.

The paper leaves several details open. The choices below are the ones that reproduce the
parameter counts of its Table 2 and Table 8 (``shared/design/paper-spec.md``); each module says
which choice it makes. Where the counts cannot decide (e.g. where the extra LayerNorm sits), the
module says so and why it picked what it did. There are no public weights, so nothing here has to
match a foreign state dict.

Speed (docs/performance.md has the measurements, docs/speed-log.md the history). On CUDA every branch of an attention layer goes
through ONE ``scaled_dot_product_attention`` call: dilation only permutes pixels, so at a given
stage every branch has the same number of 7x7 windows per image, and the branches are stacked along
the head axis. On the CPU, where there are no kernel launches to save, the branches run one by one,
each moved into its windows by one view and copy, and inference uses SDPA's fused CPU kernel. A
per-branch reference path that applies the paper's einops rearranges literally is kept
(``set_reference_attention``): tests compare all three, and FLOPs are counted on it because it is
the computation graph the paper describes.
The convolution side has exact rewrites too: on the CPU, dilated depthwise convolutions train with
hand-written backward passes on fast kernels (:mod:`accvit_med.models.depthwise`), BatchNorm
treats channels-last maps as matrices, and the squeeze-and-excitation 1x1 convolutions on pooled
vectors run as matrix products; on CUDA the depthwise branches run in NCHW
(``CUDA_BRANCHES_CONTIGUOUS``); everywhere the downsampling gate pools after its 1x1 convolution.
Inference without autograd works in place, and on the CPU each convolution + GELU is one oneDNN
call (same results up to float rounding, about 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation
from torchvision.ops.stochastic_depth import StochasticDepth

from accvit_med.errors import UserError
from accvit_med.models.depthwise import DilatedDepthwiseConv, conv_gelu
from accvit_med.models.partition import (
    WINDOW,
    atrous_window_pixels,
    dilate,
    relative_position_index,
    undilate,
    window_departition,
    window_partition,
)

# Every stage halves the map; the stem and stage 1 together divide by 4 and stage 1's widest
# dilation (8) must still leave whole 7x7 windows: 224 = 4 * 8 * 7. Deeper stages give the same bound.
SIZE_MULTIPLE = 224

# Dilation rates of the attention branches per stage (appendix A.2); rate 1 is the plain window.
STAGE_RATES: tuple[tuple[int, ...], ...] = ((1, 2, 4, 8), (1, 2, 4), (1, 2), (1,))
CONV_DILATIONS = (1, 2, 3)  # eq. 3
EXPANSION = 4  # 1x1 expansion of the inverted residual, as MaxViT's MBConv
SQUEEZE_RATIO = 0.25  # SE bottleneck relative to the block's output channels, as MaxViT
MLP_RATIO = 4

# On CUDA the three depthwise branches run on a contiguous (NCHW) copy of the expanded map:
# cuDNN's grouped kernels for channels-last bf16 maps are slow, dilated ones most of all, while
# PyTorch's own depthwise kernel (the one torchvision's MaxViT gets in NCHW) needs NCHW input.
# One copy in and one (4x smaller) copy out per layer buy that. Measured by benchmarks/gpu_variants.py.
CUDA_BRANCHES_CONTIGUOUS = True


class BatchNorm(nn.BatchNorm2d):
    """MaxViT's BatchNorm (eps 1e-3, slow running statistics): the paper built on TorchVision's MaxViT.

    A plain ``nn.BatchNorm2d`` (same parameters, buffers and results). On the CPU a channels-last
    map is normalised as the ``(pixels, channels)`` matrix it already is in memory: PyTorch's CPU
    kernels for that 2-D case train faster than its 4-D channels-last ones (1.7x at 256 channels
    and 56x56 pixels, measured), and the view costs nothing.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-3, momentum=0.01)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (2, 4):
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous() \
                or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        b, c, h, w = x.shape
        rows = super().forward(x.permute(0, 2, 3, 1).reshape(b * h * w, c))
        return rows.view(b, h, w, c).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class ACCViTConfig:
    """One row of Table 2."""

    stem_channels: int
    channels: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    head_dim: int
    drop_path_rate: float  # default stochastic depth: the pre-training recipe's value


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


def check_image_size(height: int, width: int) -> None:
    """Raise a UserError unless both sides are positive multiples of 224."""
    if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise UserError(
            f"ACC-ViT cannot take {height}x{width} images: height and width must be multiples of "
            f"{SIZE_MULTIPLE} (224, 448, 672, ...) so that the dilated maps split into 7x7 windows; "
            "resize or crop the images to e.g. 224x224 or 448x448"
        )


class SqueezeExcitation(nn.Module):
    """MaxViT's squeeze-and-excitation (mean -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid -> scale).

    Same parameters as ``torchvision.ops.SqueezeExcitation`` (``fc1``/``fc2`` 1x1 convolutions), but
    the two 1x1 convolutions on the pooled 1x1 map run as matrix products: oneDNN spends
    milliseconds setting up each such tiny convolution, and every layer here has three SE blocks.
    """

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)[:, :, None, None]

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """fc1 weight, fc1 bias, fc2 weight, fc2 bias, the weights as ``(out, in)`` matrices."""
        return self.fc1.weight.flatten(1), self.fc1.bias, self.fc2.weight.flatten(1), self.fc2.bias

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, C)`` channel weights that ``forward`` multiplies ``x`` by."""
        return _excitation(F.adaptive_avg_pool2d(x, 1).flatten(1), *self.matrices())[1]


def _excitation(pooled: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                fc2_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squeeze-and-excitation on pooled ``(B, C)`` features: fc1's output (before its SiLU) and
    the ``(B, C)`` scale ``sigmoid(fc2(silu(fc1(pooled))))``."""
    hidden = F.linear(pooled, fc1_weight, fc1_bias)
    return hidden, torch.sigmoid(F.linear(F.silu(hidden), fc2_weight, fc2_bias))


def _pixels_by_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H*W, C)``, a view when ``x`` is channels-last or NCHW-contiguous."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class _GatedExcitation(torch.autograd.Function):
    """``fused + gate * se(activation)``: one branch's squeeze-and-excitation and share of the gated sum.

    ``activation`` is ``(B, C, H, W)``, ``gate`` its ``(B, 1, H, W)`` gate weight, ``fused`` the sum
    so far (None for the first branch); ``fc1``/``fc2`` are the squeeze-and-excitation's weights
    and biases as matrices, and ``se(a) = a * sigmoid(fc2(silu(fc1(mean(a)))))`` per channel.
    Autograd would save the excited map as well as the activation, make two passes over full-size
    tensors per product and expand the pooling's gradient into one more full-size map to add. Here
    only the activation is kept; the small gradients come from one product ``grad * activation``
    reduced by two batched matmuls, and the activation's gradient is written in two passes.
    """

    @staticmethod
    def forward(ctx, fused, activation, gate, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
        dtype = activation.dtype  # under autocast: the dtype autocast gave the branch's map
        pooled = activation.mean((2, 3))
        weights = (fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        hidden, excitation = _excitation(pooled, *(w.to(dtype) for w in weights))
        ctx.save_for_backward(activation, gate, pooled, hidden, excitation, fc1_weight, fc2_weight)
        ctx.first = fused is None
        excited = activation * excitation[:, :, None, None]
        return excited.mul_(gate) if fused is None else torch.addcmul(fused, excited, gate)

    @staticmethod
    def backward(ctx, grad):
        activation, gate, pooled, hidden, excitation, fc1_weight, fc2_weight = ctx.saved_tensors
        b, c, height, width = activation.shape
        dtype = torch.promote_types(grad.dtype, activation.dtype)
        products = grad.to(dtype) * activation
        gate_values, excitation_values = gate.to(dtype), excitation.to(dtype)
        # (B, HW, C) is a view in both layouts (channels-last on the CPU, NCHW on CUDA). Both
        # reductions are one-row products (MKL's one-column form is 2.4x slower), and the gate, a
        # strided slice of all branches' weights, is copied to one dense row per image first
        # (5x faster product at stage 1).
        rows = _pixels_by_channels(products)
        grad_excitation = torch.bmm(gate_values.reshape(b, 1, -1).contiguous(), rows).view(b, c)
        grad_gate = torch.bmm(excitation_values.view(b, 1, c), rows.transpose(1, 2)).view(gate.shape)
        # The squeeze-and-excitation's small layers, by hand: sigmoid' = e(1-e), silu' = s(1 + h(1-s)).
        pooled, hidden = pooled.to(dtype), hidden.to(dtype)
        grad_logits = grad_excitation * excitation_values * (1 - excitation_values)
        squeezed = F.silu(hidden)
        grad_fc2_weight, grad_fc2_bias = grad_logits.t() @ squeezed, grad_logits.sum(0)
        sigmoid_hidden = torch.sigmoid(hidden)
        silu_slope = sigmoid_hidden * (1 + hidden * (1 - sigmoid_hidden))
        grad_hidden = (grad_logits @ fc2_weight.to(dtype)) * silu_slope
        grad_fc1_weight, grad_fc1_bias = grad_hidden.t() @ pooled, grad_hidden.sum(0)
        grad_pooled = (grad_hidden @ fc1_weight.to(dtype)) / (height * width)
        # d/d activation = grad * gate * excitation + the pooling's share, spread evenly.
        grad_activation = grad * gate
        torch.addcmul(grad_pooled[:, :, None, None].to(grad_activation.dtype), grad_activation,
                      excitation[:, :, None, None], out=grad_activation)
        weights = (grad_fc1_weight, grad_fc1_bias, grad_fc2_weight, grad_fc2_bias)
        return ((None if ctx.first else grad), grad_activation, grad_gate,
                *(g.to(w.dtype) for g, w in zip(weights, (fc1_weight, fc1_weight, fc2_weight, fc2_weight))))


def _batchnorm_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` per channel, in eval mode."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return scale, norm.bias - norm.running_mean * scale


class AtrousInvertedResidual(nn.Module):
    """Eq. 3: 1x1 expand x4 -> three depthwise 3x3 (dilation 1, 2, 3) fused by gating -> 1x1 project.

    Choices (they reproduce Table 2 and Table 8): as MaxViT's MBConv, a BatchNorm pre-norm, the
    expansion to 4x the OUTPUT channels with BN and GELU, the stride in the depthwise convolutions and
    an avg-pool + 1x1 shortcut when the layer downsamples. Each depthwise branch has its own BN, GELU
    and squeeze-and-excitation (bottleneck = output channels / 4); there is no SE after the fusion.
    The gate is a per-pixel linear layer (a 1x1 convolution) from the expanded features to one weight
    per branch, softmaxed over branches. When the layer downsamples, the gate reads the expanded map
    through the shortcut's 3x3/2 average pool so that it sees the pixels the branches produce.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        mid_channels = out_channels * EXPANSION
        squeeze_channels = int(out_channels * SQUEEZE_RATIO)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            pool = [nn.AvgPool2d(3, stride=stride, padding=1)] if stride == 2 else []
            self.shortcut = nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, 1))
        self.pre_norm = BatchNorm(in_channels)
        self.expand = Conv2dNormActivation(
            in_channels, mid_channels, 1, norm_layer=BatchNorm, activation_layer=nn.GELU, inplace=None
        )
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Sequential(
                    DilatedDepthwiseConv(mid_channels, dilation, stride), BatchNorm(mid_channels), nn.GELU()
                ),
                SqueezeExcitation(mid_channels, squeeze_channels),
            )
            for dilation in CONV_DILATIONS
        )
        self.gate_pool = nn.AvgPool2d(3, stride=stride, padding=1) if stride == 2 else nn.Identity()
        self.gate = nn.Conv2d(mid_channels, len(CONV_DILATIONS), 1)
        self.use_reference = False  # pool, then gate: the order the paper's graph (and its FLOPs) has
        self.project = nn.Conv2d(mid_channels, out_channels, 1)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def gate_logits(self, expanded: torch.Tensor) -> torch.Tensor:
        """``gate(gate_pool(expanded))``, with the pool moved after the 1x1 convolution.

        Both are linear, so they commute (the bias is added after pooling: zero padding would
        otherwise scale it at the border); pooling the few gate channels instead of the
        expanded map saves a pass over the largest tensor of the layer.
        """
        if self.use_reference or isinstance(self.gate_pool, nn.Identity):
            return self.gate(self.gate_pool(expanded))
        logits = self.gate_pool(F.conv2d(expanded, self.gate.weight))
        return logits + self.gate.bias[:, None, None]

    def expanded(self, x: torch.Tensor) -> torch.Tensor:
        """pre-norm -> 1x1 expansion -> BN -> GELU; in eval mode both BatchNorms are folded into the
        1x1 convolution (exact: no padding to see the pre-norm's shift), two passes fewer."""
        if self.training:
            return self.expand(self.pre_norm(x))
        conv, norm, activation = self.expand
        in_scale, in_shift = _batchnorm_affine(self.pre_norm)
        out_scale, out_shift = _batchnorm_affine(norm)
        weight = conv.weight.flatten(1)
        bias = weight @ in_shift if conv.bias is None else weight @ in_shift + conv.bias
        weight = weight * in_scale * out_scale[:, None]
        return conv_gelu(activation, x, weight[:, :, None, None], bias * out_scale + out_shift)

    def branch_activation(self, index: int, expanded: torch.Tensor) -> torch.Tensor:
        """One branch's depthwise conv -> BN -> GELU (before its squeeze-and-excitation); in eval
        mode the BatchNorm is folded into the convolution."""
        (conv, norm, activation), _ = self.branches[index]
        if self.training:
            activated = activation(norm(conv(expanded)))
        else:
            scale, shift = _batchnorm_affine(norm)
            weight = conv.weight * scale[:, None, None, None]
            if torch.is_grad_enabled():  # Grad-CAM: the convolution's rewritten backward
                activated = activation(conv.convolve(expanded, weight, shift))
            else:
                activated = conv_gelu(activation, expanded, weight, shift, conv.stride, conv.padding,
                                      conv.dilation, conv.groups)
        return activated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expanded(x)
        branch_layout = expanded.is_cuda and CUDA_BRANCHES_CONTIGUOUS
        if branch_layout:
            expanded = expanded.contiguous()  # see CUDA_BRANCHES_CONTIGUOUS
        weights = torch.softmax(self.gate_logits(expanded), dim=1)
        fused = None
        for index, (_, excitation) in enumerate(self.branches):
            activated = self.branch_activation(index, expanded)
            gate = weights[:, index : index + 1]
            if torch.is_grad_enabled():
                fused = _GatedExcitation.apply(fused, activated, gate, *excitation.matrices())
            else:  # nothing is saved for a backward pass: reuse the branch's map (see conv_gelu)
                share = activated.mul_(excitation.scale(activated)[:, :, None, None])
                fused = share.mul_(gate) if fused is None else fused.addcmul_(share, gate)
        projected = self.project(fused)
        if branch_layout:
            projected = projected.contiguous(memory_format=torch.channels_last)
        return self.shortcut(x) + self.drop_path(projected)


class AttentionBranch(nn.Module):
    """One branch of atrous attention: its own pre-LayerNorm, qkv, output projection and 7x7
    relative position bias (the counts need all of them per branch)."""

    def __init__(self, channels: int, head_dim: int) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * WINDOW - 1) ** 2, self.heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(WINDOW), persistent=False)

    def folded_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """qkv weight and bias with this branch's LayerNorm affine folded in, for inputs that are
        already normalised without affine (the statistics are the same for every branch)."""
        return self.qkv.weight * self.norm.weight, self.qkv.weight @ self.norm.bias + self.qkv.bias

    def relative_bias(self) -> torch.Tensor:
        """``(heads, 49, 49)`` additive attention bias."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)

    def attend(self, windows: torch.Tensor) -> torch.Tensor:
        """Reference attention on ``(B, windows, 49, C)`` with explicit matmuls (the paper's graph).

        Returns the heads concatenated, BEFORE the output projection.
        """
        b, g, length, channels = windows.shape
        qkv = self.qkv(self.norm(windows)).view(b, g, length, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, G, heads, L, head_dim)
        # Scale by the head size, as scaled_dot_product_attention does. (TorchVision's MaxViT scales by
        # the channel count instead; with no public ACC-ViT weights to match, we keep the standard one.)
        scores = torch.matmul(q * self.head_dim**-0.5, k.transpose(-2, -1)) + self.relative_bias()
        out = torch.matmul(scores.softmax(dim=-1), v)
        return out.transpose(2, 3).reshape(b, g, length, channels)


def _atrous_windows(tokens: torch.Tensor, rate: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * rate^2 * windows, 49, C)``: :func:`dilate` then
    :func:`window_partition` (the paper's rearranges) as one view and one copy.

    Row h of the map is ``(window_row * 7 + token_row) * rate + dilation_row``, likewise columns;
    the windows come out in the reference's order: (image, dilation offset, window, token).
    """
    b, height, width, channels = tokens.shape
    gh, gw = height // (WINDOW * rate), width // (WINDOW * rate)
    grid = tokens.view(b, gh, WINDOW, rate, gw, WINDOW, rate, channels)
    return grid.permute(0, 3, 6, 1, 4, 2, 5, 7).reshape(-1, WINDOW * WINDOW, channels)


def _atrous_pixels(windows: torch.Tensor, b: int, height: int, width: int, rate: int) -> torch.Tensor:
    """Inverse of :func:`_atrous_windows`: back to ``(B, H, W, C)``."""
    channels = windows.shape[-1]
    gh, gw = height // (WINDOW * rate), width // (WINDOW * rate)
    grid = windows.view(b, rate, rate, gh, gw, WINDOW, WINDOW, channels)
    return grid.permute(0, 3, 5, 1, 4, 6, 2, 7).reshape(b, height, width, channels)


class _PermuteRows(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation ``order`` whose inverse is ``inverse``.

    The gradient of a permutation is the inverse permutation, another gather. Autograd's generic
    rule for index_select (zero-fill, then scatter-add) costs two extra passes over the tensor.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(order, inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        order, inverse = ctx.saved_tensors
        return _PermuteRows.apply(grad, inverse, order), None, None


def _window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over 49-token windows; ``bias`` is ``(heads, L, L)``.

    On CUDA this is ``scaled_dot_product_attention`` (a fused kernel). On the CPU, SDPA has a fused
    (flash) kernel too, but it takes a float mask only as a 4-D tensor and only when nothing needs
    a gradient; otherwise it falls back to a generic path that also scans every row for full
    masking. So: inference goes to the flash kernel (1.7x faster than the matmuls at stage 1,
    measured), training to two batched matmuls and a softmax (1.1x faster than SDPA's fallback).
    """
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias))
    if not needs_grad:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + bias
    return torch.matmul(scores.softmax(dim=-1), v)


class AtrousAttention(nn.Module):
    """Sections 2.1-2.2: windowed attention on the map and its dilated versions, fused by a gate.

    Gate (2.2): softmax over branches of ONE linear layer (C -> branches) applied per pixel to the
    layer's input; one weight per branch and pixel (a per-channel gate would not match the counts).
    A single branch (stage 4) has no gate.
    """

    def __init__(self, channels: int, head_dim: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be a multiple of head_dim {head_dim}")
        self.rates = rates
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.branches = nn.ModuleList(AttentionBranch(channels, head_dim) for _ in rates)
        self.gate = nn.Linear(channels, len(rates)) if len(rates) > 1 else None
        self.use_reference = False
        # (height, width, device) -> (gather, scatter) token indices of the fast path.
        self._index_cache: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> fused attention ``(B, H, W, C)`` (the gated sum of the branches)."""
        if self.use_reference:
            return self._forward_reference(tokens)
        if tokens.device.type == "cpu":
            return self._forward_per_branch(tokens)
        return self._forward_fast(tokens)

    def gate_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, branches)`` weights, summing to 1 over branches at every pixel."""
        if self.gate is None:
            return tokens.new_ones(*tokens.shape[:-1], 1)
        return torch.softmax(self.gate(tokens), dim=-1)

    def branch_outputs(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's projected attention output as ``(B, H, W, C)``, via the paper's einops ops."""
        x = tokens.permute(0, 3, 1, 2)
        height, width = x.shape[-2:]
        outputs = []
        for rate, branch in zip(self.rates, self.branches):
            dilated = dilate(x, rate)
            attended = branch.proj(branch.attend(window_partition(dilated)))
            restored = undilate(window_departition(attended, height // rate, width // rate), rate)
            outputs.append(restored.permute(0, 2, 3, 1))
        return outputs

    def _forward_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.gate_weights(tokens)
        outputs = self.branch_outputs(tokens)
        fused = weights[..., 0:1] * outputs[0]
        for index in range(1, len(outputs)):
            fused = fused + weights[..., index : index + 1] * outputs[index]
        return fused

    def _indices(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token order of the fast path, from the reference partition applied to pixel numbers.

        ``gather`` picks, for (window, branch, token), the row ``pixel * branches + branch`` of the
        per-pixel qkv of all branches; ``scatter`` is its inverse permutation.
        """
        key = (height, width, str(device))
        if key not in self._index_cache:
            # Built outside inference mode even when first called inside it: inference tensors
            # could not be used later by a training step.
            with torch.inference_mode(False):
                self._index_cache[key] = self._build_indices(height, width, device)
        return self._index_cache[key]

    def _build_indices(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.rates)
        rows = [atrous_window_pixels(height, width, rate) * n + b for b, rate in enumerate(self.rates)]
        gather = torch.stack(rows, dim=1).flatten()  # (windows, branch, token) order
        scatter = torch.empty_like(gather)
        scatter[gather] = torch.arange(gather.numel())
        return gather.to(device), scatter.to(device)

    def _forward_per_branch(self, tokens: torch.Tensor) -> torch.Tensor:
        """The CPU path: branch by branch, each branch's tokens moved into its windows by one view.

        On the CPU there is no kernel launch to save by stacking branches, while the gather of the
        stacked q, k, v (three times the channels of the tokens) costs more than moving the
        normalised tokens into each branch's windows. Shared with the fast path: one LayerNorm
        for all branches, with each branch's affine folded into its qkv.
        """
        b, height, width, channels = tokens.shape
        heads, head_dim, length = self.heads, self.head_dim, WINDOW * WINDOW
        normed = F.layer_norm(tokens, (channels,), eps=self.branches[0].norm.eps)
        weights = None if self.gate is None else torch.softmax(self.gate(tokens), dim=-1)
        fused = None
        for index, (rate, branch) in enumerate(zip(self.rates, self.branches)):
            windows = _atrous_windows(normed, rate)  # (B * rate^2 * windows, 49, C)
            qkv = F.linear(windows, *branch.folded_qkv()).view(-1, length, 3, heads, head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (G, heads, 49, head_dim)
            out = _window_attention(q, k, v, branch.relative_bias()).transpose(1, 2).reshape(-1, length, channels)
            out = _atrous_pixels(F.linear(out, branch.proj.weight, branch.proj.bias), b, height, width, rate)
            if weights is None:
                fused = out
            elif fused is None:
                fused = out * weights[..., index : index + 1]
            else:
                fused = torch.addcmul(fused, out, weights[..., index : index + 1])
        return fused

    def _forward_fast(self, tokens: torch.Tensor) -> torch.Tensor:
        b, height, width, channels = tokens.shape
        n, heads, head_dim, length = len(self.rates), self.heads, self.head_dim, WINDOW * WINDOW
        pixels = height * width
        windows = pixels // length
        gather, scatter = self._indices(height, width, tokens.device)
        flat = tokens.reshape(b, pixels, channels)

        # Every branch's LayerNorm sees the same pixels, so the statistics are shared: normalise once
        # and fold each branch's affine (gamma, beta) into its qkv weights. Then ONE matmul gives the
        # q, k, v of every branch at every pixel.
        normed = F.layer_norm(flat, (channels,), eps=self.branches[0].norm.eps)
        qkv_weights, qkv_biases = zip(*(br.folded_qkv() for br in self.branches))
        qkv = F.linear(normed, torch.cat(qkv_weights), torch.cat(qkv_biases))  # (B, pixels, n*3C)

        # Gather into (window, branch, token) order; branches stack along the head axis.
        qkv = _PermuteRows.apply(qkv.view(b, pixels * n, 3 * channels), gather, scatter)
        qkv = qkv.view(b * windows, n, length, 3, heads, head_dim).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.reshape(3, b * windows, n * heads, length, head_dim).unbind(0)
        bias = torch.cat([br.relative_bias() for br in self.branches]).to(q.dtype)  # (n*heads, L, L)
        out = _window_attention(q, k, v, bias)  # (B*windows, n*heads, L, hd)

        # Back to (pixel, branch) order, then projection and gated sum in one matmul:
        # sum_i g_i (W_i y_i + c_i) = [W_1 .. W_n] @ concat_i(g_i y_i) + g @ [c_1 .. c_n].
        out = out.view(b, windows, n, heads, length, head_dim).transpose(3, 4)
        out = _PermuteRows.apply(out.reshape(b, windows * n * length, channels), scatter, gather)
        out = out.view(b, pixels, n, channels)
        proj_weight = torch.cat([br.proj.weight for br in self.branches], dim=1)  # (C, n*C)
        proj_bias = torch.stack([br.proj.bias for br in self.branches])  # (n, C)
        if self.gate is None:
            fused = F.linear(out.view(b, pixels, channels), proj_weight, proj_bias[0])
        else:
            weights = torch.softmax(self.gate(flat), dim=-1)  # (B, pixels, n)
            gated = (out * weights.unsqueeze(-1)).view(b, pixels, n * channels)
            fused = F.linear(gated, proj_weight)
            fused = fused + weights @ proj_bias
        return fused.view(b, height, width, channels)


class ACCViTLayer(nn.Module):
    """Atrous inverted residual convolution, then atrous attention with a shared MLP (2.3).

    Choices: the fused attention goes through one more LayerNorm before the residual add. The counts
    require exactly one LayerNorm(C) per layer beyond the branch pre-norms and the MLP's pre-norm but
    cannot say where; normalising the gated sum keeps its scale independent of how many branches
    there are and of how peaked the gate is. The MLP (ratio 4, GELU, pre-norm) is shared by all
    branches: it runs once, on the fused map.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, head_dim: int, rates: tuple[int, ...], drop_path: float
    ) -> None:
        super().__init__()
        self.conv = AtrousInvertedResidual(in_channels, out_channels, stride, drop_path)
        self.attention = AtrousAttention(out_channels, head_dim, rates)
        self.attention_norm = nn.LayerNorm(out_channels)
        self.mlp = nn.Sequential(
            nn.LayerNorm(out_channels),
            nn.Linear(out_channels, out_channels * MLP_RATIO),
            nn.GELU(),
            nn.Linear(out_channels * MLP_RATIO, out_channels),
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        # Attention and MLP work per pixel on channels-last tokens; with channels_last memory format
        # these permutes are free views.
        tokens = x.permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self.attention_norm(self.attention(tokens)))
        tokens = tokens + self.drop_path(self.mlp(tokens))
        return tokens.permute(0, 3, 1, 2)


class ACCViT(nn.Module):
    """Stem, four stages (first layer of each halves the map), MaxViT's classifier top."""

    def __init__(self, config: ACCViTConfig, num_classes: int = 1000, drop_path_rate: float | None = None) -> None:
        super().__init__()
        self.config = config
        rate = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        # MaxViT's stem: 3x3/2 conv + BN + GELU, then a plain 3x3 conv with bias.
        self.stem = nn.Sequential(
            Conv2dNormActivation(
                3, config.stem_channels, 3, stride=2, norm_layer=BatchNorm, activation_layer=nn.GELU,
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
                ACCViTLayer(
                    in_channels if i == 0 else channels,
                    channels,
                    2 if i == 0 else 1,
                    config.head_dim,
                    rates,
                    drop_paths[sum(config.depths[:stage]) + i],
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


def reference_path_modules(model: nn.Module) -> list[nn.Module]:
    """The modules with a ``use_reference`` switch between the paper's graph and the fast path."""
    return [m for m in model.modules() if isinstance(m, (AtrousAttention, AtrousInvertedResidual))]


def set_reference_attention(model: nn.Module, enabled: bool = True) -> None:
    """Switch every atrous attention layer to the per-branch einops path (or back to the fast one),
    and every downsampling convolution gate to pooling before its 1x1 convolution."""
    for module in reference_path_modules(model):
        module.use_reference = enabled


def build_acc_vit(name: str, num_classes: int = 1000, drop_path_rate: float | None = None) -> ACCViT:
    return ACCViT(CONFIGS[name], num_classes=num_classes, drop_path_rate=drop_path_rate)
