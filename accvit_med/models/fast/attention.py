"""Atrous attention (sections 2.1-2.2) rewritten for speed with the same parameters and results.

:class:`FastAtrousAttention` computes :class:`accvit_med.models.atrous_attention.AtrousAttention`'s function:
- every branch's LayerNorm sees the same pixels, so the statistics are computed once and each
  branch's affine is folded into its qkv weights (:func:`folded_qkv`);
- on CUDA every branch goes through ONE ``scaled_dot_product_attention`` call: dilation only
  permutes pixels, so at a given stage every branch has the same number of 7x7 windows per image,
  and the branches are stacked along the head axis (:meth:`FastAtrousAttention.forward_stacked`);
- on the CPU, where there are no kernel launches to save, the branches run one by one, each moved
  into its windows by one view and copy (:meth:`FastAtrousAttention.forward_per_branch`), and
  inference uses SDPA's fused CPU kernel (:func:`_window_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from accvit_med.models.atrous_attention import AtrousAttention, AttentionBranch
from accvit_med.models.partition import WINDOW, atrous_window_pixels


def folded_qkv(branch: AttentionBranch) -> tuple[torch.Tensor, torch.Tensor]:
    """qkv weight and bias with the branch's LayerNorm affine folded in, for inputs that are
    already normalised without affine (the statistics are the same for every branch)."""
    return branch.qkv.weight * branch.norm.weight, branch.qkv.weight @ branch.norm.bias + branch.qkv.bias


def _atrous_windows(tokens: torch.Tensor, rate: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * rate^2 * windows, 49, C)``: ``dilate`` then ``window_partition``
    (the paper's rearranges) as one view and one copy.

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


class FastAtrousAttention(AtrousAttention):
    """:class:`AtrousAttention` (same parameters and results): per-branch on the CPU, all branches
    stacked into one attention call elsewhere. Gated fusion only (the paper's final design).

    ``use_reference``: run the reference forward instead (what :func:`count_flops` counts).
    """

    def __init__(self, channels: int, head_dim: int, rates: tuple[int, ...], gated: bool = True) -> None:
        if not gated:
            raise ValueError("the fast atrous attention has gated fusion only; build it with fast=False")
        super().__init__(channels, head_dim, rates, gated=gated)
        self.use_reference = False
        # (height, width, device) -> (gather, scatter) token indices of the stacked path.
        self._index_cache: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.use_reference:
            return super().forward(tokens)
        if tokens.device.type == "cpu":
            return self.forward_per_branch(tokens)
        return self.forward_stacked(tokens)

    def _indices(self, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token order of the stacked path, from the reference partition applied to pixel numbers.

        ``gather`` picks, for (window, branch, token), the row ``pixel * branches + branch`` of the
        per-pixel qkv of all branches; ``scatter`` is its inverse permutation.
        """
        key = (height, width, str(device))
        if key not in self._index_cache:
            # Built outside inference mode even when first called inside it: inference tensors
            # could not be used later by a training step.
            with torch.inference_mode(False):
                n = len(self.rates)
                rows = [atrous_window_pixels(height, width, rate) * n + b for b, rate in enumerate(self.rates)]
                gather = torch.stack(rows, dim=1).flatten()  # (windows, branch, token) order
                scatter = torch.empty_like(gather)
                scatter[gather] = torch.arange(gather.numel())
                self._index_cache[key] = gather.to(device), scatter.to(device)
        return self._index_cache[key]

    def forward_per_branch(self, tokens: torch.Tensor) -> torch.Tensor:
        """The CPU path: branch by branch, each branch's tokens moved into its windows by one view.

        On the CPU there is no kernel launch to save by stacking branches, while the gather of the
        stacked q, k, v (three times the channels of the tokens) costs more than moving the
        normalised tokens into each branch's windows.
        """
        b, height, width, channels = tokens.shape
        heads, head_dim, length = self.heads, self.head_dim, WINDOW * WINDOW
        normed = F.layer_norm(tokens, (channels,), eps=self.branches[0].norm.eps)
        weights = None if self.gate is None else torch.softmax(self.gate(tokens), dim=-1)
        fused = None
        for index, (rate, branch) in enumerate(zip(self.rates, self.branches)):
            windows = _atrous_windows(normed, rate)  # (B * rate^2 * windows, 49, C)
            qkv = F.linear(windows, *folded_qkv(branch)).view(-1, length, 3, heads, head_dim)
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

    def forward_stacked(self, tokens: torch.Tensor) -> torch.Tensor:
        """The CUDA path: every branch in one qkv matmul, one attention call and one projection."""
        b, height, width, channels = tokens.shape
        n, heads, head_dim, length = len(self.rates), self.heads, self.head_dim, WINDOW * WINDOW
        pixels = height * width
        windows = pixels // length
        gather, scatter = self._indices(height, width, tokens.device)
        flat = tokens.reshape(b, pixels, channels)

        # One shared normalisation, each branch's affine folded into its qkv: ONE matmul gives the
        # q, k, v of every branch at every pixel.
        normed = F.layer_norm(flat, (channels,), eps=self.branches[0].norm.eps)
        qkv_weights, qkv_biases = zip(*(folded_qkv(br) for br in self.branches))
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
