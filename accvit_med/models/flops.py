"""FLOPs counted as the ACC-ViT paper counted them: fvcore's conventions, model in train mode.

fvcore (``FlopCountAnalysis``) counts one multiply-add as one FLOP for matmuls and convolutions
(biases free), BatchNorm as 5 per element in train mode (2 in eval), LayerNorm as 5 per element
(4 without affine), adaptive average pooling as 1 per input element, and nothing else (activations,
softmax, additions). It works by JIT tracing and does not know ``scaled_dot_product_attention``.
This counter applies the same rules to the aten ops that actually run (a ``TorchDispatchMode``), so
it also covers fused attention: q@k and attn@v are counted as the two matmuls they replace.

ACC-ViT is counted on its per-branch reference path: that is the computation graph the paper
describes (one LayerNorm per branch). The fast path is an exact reorganisation with the same
matmul multiply-adds and fewer LayerNorm passes.
"""

from __future__ import annotations

from collections import Counter
from math import prod
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from accvit_med.models.fast import reference_path_modules

aten = torch.ops.aten


def _matmul(args: tuple, out: Any) -> int:
    # mm / bmm: output elements x the contracted size (the last axis of the first operand).
    return out.numel() * args[0].shape[-1]


def _matmul_with_bias(args: tuple, out: Any) -> int:
    # addmm / baddbmm(bias, a, b): the bias is free, as in fvcore.
    return out.numel() * args[1].shape[-1]


def _convolution(args: tuple, out: Any) -> int:
    weight = args[1]
    return out.numel() * prod(weight.shape[1:])  # per output element: in_channels/groups x kernel


def _batch_norm(training: bool | None) -> Callable[[tuple, Any], int]:
    """fvcore: 5 per element in train mode (4 without affine), 2 in eval (1 without affine)."""

    def count(args: tuple, out: Any) -> int:
        # The generic ops carry the training flag as their first bool argument.
        is_training = next(a for a in args[3:] if isinstance(a, bool)) if training is None else training
        affine = args[1] is not None
        return args[0].numel() * ((5 if affine else 4) if is_training else (2 if affine else 1))

    return count


def _layer_norm(args: tuple, out: Any) -> int:
    affine = len(args) > 2 and args[2] is not None
    return args[0].numel() * (5 if affine else 4)


def _mean(args: tuple, out: Any) -> int:
    return args[0].numel()  # adaptive_avg_pool2d(1) reaches aten as a mean over H and W


def _attention(args: tuple, out: Any) -> int:
    # Fused attention = q @ k^T (L x S x E) + attn @ v (L x S x Ev) per batch and head.
    query, key, value = args[:3]
    rows = query.numel() // query.shape[-1]
    return rows * key.shape[-2] * (query.shape[-1] + value.shape[-1])


_RULES: dict[Any, Callable[[tuple, Any], int]] = {
    aten.mm: _matmul,
    aten.bmm: _matmul,
    aten.addmm: _matmul_with_bias,
    aten.baddbmm: _matmul_with_bias,
    aten.convolution: _convolution,
    aten.native_batch_norm: _batch_norm(None),
    aten._native_batch_norm_legit: _batch_norm(None),
    aten._native_batch_norm_legit_no_training: _batch_norm(False),
    aten._batch_norm_with_update: _batch_norm(True),
    aten._batch_norm_no_update: _batch_norm(False),
    aten.native_layer_norm: _layer_norm,
    aten.mean: _mean,
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention: _attention,
    aten._scaled_dot_product_efficient_attention: _attention,
    aten._scaled_dot_product_cudnn_attention: _attention,
}


class FvcoreStyleCounter(TorchDispatchMode):
    """Counts FLOPs of the aten ops run inside it; ``total`` and ``by_op`` (op name -> FLOPs)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _RULES.get(func._overloadpacket)
        if rule is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.by_op[func._overloadpacket.__name__] += rule(args, first)
        return out


def count_flops(model: nn.Module, image_size: int = 224, *, reference_attention: bool = True) -> int:
    """FLOPs of one ``image_size`` x ``image_size`` image, fvcore conventions, model in train mode.

    The model is left as it was: mode, attention path and BatchNorm running statistics are restored.
    """
    switchable = reference_path_modules(model)
    previous_paths = [m.use_reference for m in switchable]
    was_training = model.training
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    device = next(model.parameters()).device
    try:
        for module in switchable:
            module.use_reference = reference_attention
        model.train()
        counter = FvcoreStyleCounter()
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
        return counter.total
    finally:
        for module, path in zip(switchable, previous_paths):
            module.use_reference = path
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
