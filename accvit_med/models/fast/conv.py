"""The atrous inverted residual (eq. 3) and its BatchNorm, rewritten for speed with the same results.

:class:`FastAtrousInvertedResidual` has the parameters of
:class:`accvit_med.models.atrous_conv.AtrousInvertedResidual` and computes the same function:
- training: each branch's squeeze-and-excitation and gated share in one autograd Function
  (:class:`_GatedExcitation`), whose backward writes the activation's gradient in two passes; on the
  CPU the dilated depthwise convolutions train through hand-written backward passes
  (:mod:`accvit_med.models.fast.depthwise`) and BatchNorm treats channels-last maps as matrices;
- evaluation: both BatchNorms around the 1x1 expansion and each branch's BatchNorm folded into the
  convolutions; without autograd the branch maps are reused in place and, on the CPU, each
  convolution + GELU is one oneDNN call;
- everywhere: the downsampling gate pools after its 1x1 convolution (both are linear);
- on CUDA: the depthwise branches run on an NCHW copy (``cuda_branches_contiguous``).
Measurements: docs/performance.md and docs/speed-log.md; the tests compare every path with the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from accvit_med.models.atrous_conv import AtrousInvertedResidual, BatchNorm
from accvit_med.models.fast.depthwise import DilatedDepthwiseConv, conv_gelu


class FastBatchNorm(BatchNorm):
    """MaxViT's BatchNorm (same parameters, buffers and results) that normalises a channels-last CPU
    map as the ``(pixels, channels)`` matrix it already is in memory: PyTorch's CPU kernels for that
    2-D case train faster than its 4-D channels-last ones (1.7x at 256 channels and 56x56 pixels,
    measured), and the view costs nothing.
    """

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


def _se_matrices(se: SqueezeExcitation) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fc1 weight, fc1 bias, fc2 weight, fc2 bias of a squeeze-and-excitation, weights as ``(out, in)``.

    The two 1x1 convolutions on the pooled 1x1 map run as matrix products: oneDNN spends
    milliseconds setting up each such tiny convolution, and every layer has three SE blocks.
    """
    return se.fc1.weight.flatten(1), se.fc1.bias, se.fc2.weight.flatten(1), se.fc2.bias


def _excitation(pooled: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                fc2_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squeeze-and-excitation on pooled ``(B, C)`` features: fc1's output (before its SiLU) and
    the ``(B, C)`` scale ``sigmoid(fc2(silu(fc1(pooled))))``."""
    hidden = F.linear(pooled, fc1_weight, fc1_bias)
    return hidden, torch.sigmoid(F.linear(F.silu(hidden), fc2_weight, fc2_bias))


def _se_scale(se: SqueezeExcitation, x: torch.Tensor) -> torch.Tensor:
    """The ``(B, C)`` channel weights that ``se(x)`` multiplies ``x`` by."""
    return _excitation(F.adaptive_avg_pool2d(x, 1).flatten(1), *_se_matrices(se))[1]


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


class FastAtrousInvertedResidual(AtrousInvertedResidual):
    """:class:`AtrousInvertedResidual` (same parameters and results) with the rewrites listed in the
    module docstring. Gated fusion only (the paper's final design).

    ``use_reference``: run the reference forward instead (what :func:`count_flops` counts).
    ``cuda_branches_contiguous``: on CUDA, run the three depthwise branches on a contiguous (NCHW)
    copy of the expanded map: cuDNN's grouped kernels for channels-last bf16 maps are slow, dilated
    ones most of all, while PyTorch's own depthwise kernel (the one torchvision's MaxViT gets in NCHW)
    needs NCHW input. One copy in and one (4x smaller) copy out per layer buy that. Measured by
    benchmarks/gpu_variants.py (which sets the class default); a module's own attribute overrides it.
    """

    norm_layer = FastBatchNorm
    depthwise_layer = DilatedDepthwiseConv
    cuda_branches_contiguous = True

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float,
                 gated: bool = True) -> None:
        if not gated:
            raise ValueError("the fast atrous inverted residual has gated fusion only; build it with fast=False")
        super().__init__(in_channels, out_channels, stride, drop_path, gated=gated)
        self.use_reference = False

    def gate_logits(self, expanded: torch.Tensor) -> torch.Tensor:
        """``gate(gate_pool(expanded))``, with the pool moved after the 1x1 convolution.

        Both are linear, so they commute (the bias is added after pooling: zero padding would
        otherwise scale it at the border); pooling the few gate channels instead of the
        expanded map saves a pass over the largest tensor of the layer.
        """
        if isinstance(self.gate_pool, nn.Identity):
            return self.gate(expanded)
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
            return activation(norm(conv(expanded)))
        scale, shift = _batchnorm_affine(norm)
        weight = conv.weight * scale[:, None, None, None]
        if torch.is_grad_enabled():  # Grad-CAM: the convolution's rewritten backward
            return activation(conv.convolve(expanded, weight, shift))
        return conv_gelu(activation, expanded, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_reference:
            return super().forward(x)
        expanded = self.expanded(x)
        branch_layout = expanded.is_cuda and self.cuda_branches_contiguous
        if branch_layout:
            expanded = expanded.contiguous()  # see cuda_branches_contiguous
        weights = torch.softmax(self.gate_logits(expanded), dim=1)
        fused = None
        for index, (_, excitation) in enumerate(self.branches):
            activated = self.branch_activation(index, expanded)
            gate = weights[:, index : index + 1]
            if torch.is_grad_enabled():
                fused = _GatedExcitation.apply(fused, activated, gate, *_se_matrices(excitation))
            else:  # nothing is saved for a backward pass: reuse the branch's map (see conv_gelu)
                share = activated.mul_(_se_scale(excitation, activated)[:, :, None, None])
                fused = share.mul_(gate) if fused is None else fused.addcmul_(share, gate)
        projected = self.project(fused)
        if branch_layout:
            projected = projected.contiguous(memory_format=torch.channels_last)
        return self.shortcut(x) + self.drop_path(projected)
