"""Depthwise 3x3 convolutions of the atrous inverted residual, fast on the CPU (private operators here).

The branches of eq. 3 are depthwise convolutions with dilation 1, 2 and 3 (stride 2 in a
downsampling layer). oneDNN runs dilated depthwise convolutions fast forward but slowly backward,
so :class:`DilatedDepthwiseConv` trains through hand-written backward passes on fast kernels
(``_DilatedDepthwise`` for stride 1, ``_StridedDilatedDepthwise`` for stride 2), each exact and
tested against ``F.conv2d`` in float64. For inference without autograd, :func:`conv_gelu` runs a
convolution and its GELU as one oneDNN call on the CPU, or with the GELU in place elsewhere.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class DilatedDepthwiseConv(nn.Conv2d):
    """Depthwise 3x3 convolution with dilation d (padding d, no bias), stride 1 or 2.

    Same parameters and results as ``nn.Conv2d``; only the way the gradient is computed differs.
    On CPU, oneDNN runs dilated depthwise convolutions fast forward but falls back to a slow kernel
    for their backward pass (3-60x slower than undilated, worst with stride 2). When gradients are
    needed, the convolution is therefore rewritten, exactly, onto fast kernels by the hand-written
    backward of ``_DilatedDepthwise`` (stride 1) or ``_StridedDilatedDepthwise`` (stride 2).
    """

    def __init__(self, channels: int, dilation: int, stride: int) -> None:
        super().__init__(channels, channels, 3, stride=stride, padding=dilation, dilation=dilation,
                         groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convolve(x, self.weight)

    def convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """This convolution with another ``weight`` (and a ``bias``): a BatchNorm folded in."""
        d, stride = self.dilation[0], self.stride[0]
        if d == 1 or x.device.type != "cpu" or not torch.is_grad_enabled():
            return self._conv_forward(x, weight, bias)
        if stride == 2:
            out = _StridedDilatedDepthwise.apply(x, weight, d)
        else:
            out = _DilatedDepthwise.apply(x, weight, d)
        return out if bias is None else out + bias[:, None, None]


# oneDNN's convolution with GELU fused as a post-op: the kernel inductor emits for conv -> GELU on
# the CPU. Eager inference calls it directly (below); it has no autograd, hence inference only. It
# is a private operator: checked once against F.conv2d + F.gelu before it is trusted.
_CONV_GELU = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() else None


@functools.cache
def _conv_gelu_works() -> bool:
    """Whether ``_CONV_GELU`` exists with the signature used here and matches conv2d + GELU."""
    x = torch.linspace(-3, 3, 2 * 4 * 5 * 5).view(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.linspace(-1, 1, 4 * 9).view(4, 1, 3, 3), torch.linspace(-0.5, 0.5, 4)
    try:
        with torch.inference_mode():
            fused = _CONV_GELU(x, weight, bias, [2, 2], [1, 1], [2, 2], 4, "gelu", [], "none")
    except (RuntimeError, TypeError):
        return False
    expected = F.gelu(F.conv2d(x, weight, bias, padding=2, dilation=2, groups=4))
    return fused.shape == expected.shape and torch.allclose(fused, expected, rtol=1e-5, atol=1e-6)


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def conv_gelu(activation: nn.GELU, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
              dilation: tuple[int, int] = (1, 1), groups: int = 1) -> torch.Tensor:
    """``activation(F.conv2d(x, weight, bias, ...))`` (an exact GELU). Without autograd on the CPU
    in float32, one oneDNN call with the GELU fused (one pass over the map instead of two); else,
    without autograd, the GELU in place: no new full-size map, fewer large maps through the caches
    (the timings are in docs/speed-log.md)."""
    if torch.is_grad_enabled() or _compiling():  # torch.compile fuses conv and GELU itself
        return activation(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
    if (_CONV_GELU is not None and torch.backends.mkldnn.enabled and x.device.type == "cpu"
            and x.dtype == weight.dtype == torch.float32 and activation.approximate == "none"
            and not _cpu_autocast_enabled() and _conv_gelu_works()):
        return _CONV_GELU(x, weight, bias, list(padding), list(stride), list(dilation), groups, "gelu", [], "none")
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return torch.ops.aten.gelu_(out, approximate=activation.approximate)


def _tap_range(size_in: int, size_out: int, offset: int) -> tuple[int, int]:
    """First output index i and how many have ``0 <= 2*i + offset < size_in`` (stride 2)."""
    first = max(0, (1 - offset) // 2)
    last = min(size_out, (size_in - 1 - offset) // 2 + 1)
    return first, max(0, last - first)


def _zero_padded(t: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> zero-padded ``(B, C, H', W')`` channels-last (F.pad is 4x slower here)."""
    b, h, w, c = t.shape
    out = t.new_zeros(b, h + top + bottom, w + left + right, c)
    out[:, top : top + h, left : left + w] = t
    return out.permute(0, 3, 1, 2)


class _StridedDilatedDepthwise(torch.autograd.Function):
    """Depthwise 3x3 convolution with stride 2 and dilation d > 1 (padding d), backward by hand.

    oneDNN runs it fast forward and very slowly backward (docs/speed-log.md has the timings). Per
    axis, output i reads input 2i - d, 2i and 2i + d, so the backward pass works on the map's
    (row, column) pixel parities, on fast kernels:
    - even d: only the even pixels are read: a stride-1 convolution with dilation d/2 on them;
    - odd d: the middle tap reads the even pixels, the outer two the odd pixels at offsets
      -(d+1)/2 and +(d-1)/2: on each odd parity the input's gradient is that of an undilated
      stride-1 convolution with a (d+1)-wide kernel holding the outer taps at its ends, on the even
      one a per-channel product; the weight's gradient is nine sums of products, one per tap.
    All exact (tested against ``F.conv2d`` in float64).
    """

    @staticmethod
    def forward(ctx, x, weight, dilation):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, stride=2, padding=dilation, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = (t.to(grad.dtype) for t in ctx.saved_tensors)  # CPU autocast: grad is bf16
        d = ctx.dilation
        b, c, h, w = x.shape
        half_h, half_w = (h + 1) // 2, (w + 1) // 2
        pixels = x.permute(0, 2, 3, 1)  # channels-last view
        # (B, H/2, row parity, W/2, column parity, C); an odd side gets a zero row or column
        shape = (b, half_h, 2, half_w, 2, c)
        parities = (F.pad(pixels, (0, 0, 0, w % 2, 0, h % 2)) if h % 2 or w % 2 else pixels).reshape(shape)
        need_input, need_weight = ctx.needs_input_grad[:2]
        grad_input = grad_weight = None
        if d % 2 == 0:
            even = parities[:, :, 0, :, 0].contiguous().permute(0, 3, 1, 2)
            grad_even, grad_weight = _stride1_depthwise_backward(grad, even, weight, d // 2, need_input, need_weight)
            if need_input:
                grad_input = x.new_zeros(shape)  # the odd pixels are not read
                grad_input[:, :, 0, :, 0] = grad_even.permute(0, 2, 3, 1)
        else:
            if need_weight:
                grad_weight = _tap_gradients(pixels, grad, d)
            if need_input:
                grad_input = _odd_dilation_input_gradient(parities, grad, weight, d)
        if grad_input is not None:
            grad_input = grad_input.reshape(b, 2 * half_h, 2 * half_w, c)
            if h % 2 or w % 2:
                grad_input = grad_input[:, :h, :w].contiguous()
            grad_input = grad_input.permute(0, 3, 1, 2)
        return grad_input, grad_weight, None


def _stride1_depthwise_backward(grad, x, weight, dilation, need_input, need_weight):
    """Input and weight gradients of a stride-1 depthwise 3x3 convolution (padding = dilation)."""
    c = x.shape[1]
    if dilation == 1:
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], c, [need_input, need_weight, False]
        )
        return grad_x, grad_weight
    # Dilated (see _DilatedDepthwise): a flipped-kernel forward for the input, sub-grids for the weight.
    grad_x = grad_weight = None
    if need_input:
        grad_x = F.conv2d(grad, weight.flip(-1, -2), padding=dilation, dilation=dilation, groups=c)
    if need_weight:
        grad_weight = torch.ops.aten.convolution_backward(
            _subgrids(grad, dilation), _subgrids(x, dilation), weight, None, [1, 1], [1, 1], [1, 1], False,
            [0, 0], c, [False, True, False],
        )[1]
    return grad_x, grad_weight


def _tap_gradients(pixels: torch.Tensor, grad: torch.Tensor, d: int) -> torch.Tensor:
    """Weight gradient of a stride-2 depthwise 3x3 convolution with dilation d: per tap, the sum
    over images and output pixels of the output's gradient times the input pixel the tap reads."""
    h, w = pixels.shape[1:3]
    out_h, out_w = grad.shape[-2:]
    grad_pixels = grad.permute(0, 2, 3, 1)
    taps = []
    for kh in range(3):
        i, rows = _tap_range(h, out_h, d * (kh - 1))
        for kw in range(3):
            j, cols = _tap_range(w, out_w, d * (kw - 1))
            r, q = 2 * i + d * (kh - 1), 2 * j + d * (kw - 1)
            read = pixels[:, r : r + 2 * rows - 1 : 2, q : q + 2 * cols - 1 : 2]
            taps.append((grad_pixels[:, i : i + rows, j : j + cols] * read).sum((0, 1, 2)))
    return torch.stack(taps, 1).view(-1, 1, 3, 3)


def _odd_dilation_input_gradient(parities: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, d: int
                                 ) -> torch.Tensor:
    """Input gradient, in ``parities``' layout, of a stride-2 depthwise 3x3 convolution with odd
    dilation d > 1, parity by parity (see _StridedDilatedDepthwise)."""
    _, half_h, _, half_w, _, c = parities.shape
    grad_parities = torch.empty_like(parities)  # every parity is written below
    before, after = (d + 1) // 2, (d - 1) // 2  # where the outer taps sit on the odd pixels
    for row_parity, col_parity in ((1, 1), (0, 1), (1, 0)):
        rows = (0, 2) if row_parity else (1,)
        cols = (0, 2) if col_parity else (1,)
        kernel = weight.new_zeros(c, 1, d + 1 if row_parity else 1, d + 1 if col_parity else 1)
        for u, kh in enumerate(rows):
            for v, kw in enumerate(cols):
                kernel[:, :, u * d, v * d] = weight[:, :, kh, kw]
        top, bottom = (before, after) if row_parity else (0, 0)
        left, right = (before, after) if col_parity else (0, 0)
        padded = _zero_padded(parities[:, :, row_parity, :, col_parity], top, bottom, left, right)
        grad_padded = torch.ops.aten.convolution_backward(
            grad, padded, kernel, None, [1, 1], [0, 0], [1, 1], False, [0, 0], c, [True, False, False]
        )[0].permute(0, 2, 3, 1)
        grad_parities[:, :, row_parity, :, col_parity] = grad_padded[:, top : top + half_h, left : left + half_w]
    grad_parities[:, :, 0, :, 0] = grad.permute(0, 2, 3, 1) * weight[:, 0, 1, 1]
    return grad_parities


def _subgrids(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B*d*d, C, ceil(H/d), ceil(W/d))``: the d*d interleaved sub-grids
    ``x[..., i::d, j::d]`` stacked along the batch (zero-padded to equal sizes), channels-last."""
    b, c, h, w = x.shape
    d = dilation
    hp, wp = -(-h // d) * d, -(-w // d) * d
    t = x.permute(0, 2, 3, 1)  # channels-last view: the reshapes below move whole pixels
    if (hp, wp) != (h, w):
        # Zeros beyond the border are what the dilated convolution's own padding would read.
        t = F.pad(t, (0, 0, 0, wp - w, 0, hp - h))
    t = t.reshape(b, hp // d, d, wp // d, d, c).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b * d * d, hp // d, wp // d, c).permute(0, 3, 1, 2)


class _DilatedDepthwise(torch.autograd.Function):
    """Stride-1 depthwise 3x3 convolution with dilation d (padding d), with a hand-written backward.

    oneDNN's dilated depthwise kernels are fast forward and slow backward (docs/speed-log.md). Both
    gradients are rewritten onto fast kernels, exactly: the input's gradient is the forward dilated
    convolution of the output's gradient with the flipped kernel; the weight's is an undilated
    weight gradient on the d*d sub-grids of the input and of the output's gradient (taps d apart
    in the map are neighbours in a sub-grid).
    """

    @staticmethod
    def forward(ctx, x, weight, dilation):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, padding=dilation, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = (t.to(grad.dtype) for t in ctx.saved_tensors)  # CPU autocast: grad is bf16
        need_input, need_weight = ctx.needs_input_grad[:2]
        return (*_stride1_depthwise_backward(grad, x, weight, ctx.dilation, need_input, need_weight), None)
