"""Activation checkpointing for every registry family, without touching state-dict keys.

Each residual block (ACC-ViT layer, Swin block, ConvNeXt block, MaxViT layer) keeps only its input
during the forward pass and recomputes its activations in the backward pass: peak training memory
falls from "all activations" to "one block's activations plus every block input", for one extra
forward per step. The block's own ``forward`` is replaced on the instance (no wrapper module), so
parameter names, checkpoints and ``load_state_dict`` stay exactly as without checkpointing.

A model that carries ``set_grad_checkpointing`` (ACC-ViT, as timm's models) is asked to do it
itself; for torchvision's, the registry names the block classes.
"""

from __future__ import annotations

import contextlib
import types
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _block_types() -> tuple[type[nn.Module], ...]:
    from accvit_med.models.registry import residual_block_types  # the registry knows each family's blocks

    return residual_block_types()


@contextlib.contextmanager
def _frozen_batchnorm_statistics(block: nn.Module) -> Iterator[None]:
    """Undo the running-statistics update of the recomputation (it would count each batch twice)."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[buffer.clone() for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in norms]
    try:
        yield
    finally:
        for module, (mean, var, count) in zip(norms, saved):
            module.running_mean.copy_(mean)
            module.running_var.copy_(var)
            module.num_batches_tracked.copy_(count)


def _checkpointed_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    original = type(self).forward
    # Without autograd (evaluation, inference) there is nothing to save, so nothing to recompute.
    if not (self.training and torch.is_grad_enabled()):
        return original(self, x)
    return checkpoint(
        original, self, x, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _frozen_batchnorm_statistics(self)),
    )


def checkpoint_blocks(blocks: Iterable[nn.Module]) -> int:
    """Checkpoint each of ``blocks`` in training mode; returns how many were not already.

    Bound as a method, the replacement follows the module through ``copy.deepcopy``.
    """
    wrapped = 0
    for block in blocks:
        if "forward" not in vars(block):
            block.forward = types.MethodType(_checkpointed_forward, block)
            wrapped += 1
    return wrapped


def release_blocks(blocks: Iterable[nn.Module]) -> None:
    """Undo :func:`checkpoint_blocks`: the blocks run their class's forward again."""
    for block in blocks:
        forward = vars(block).get("forward")
        if forward is not None and getattr(forward, "__func__", None) is _checkpointed_forward:
            del block.forward


def _checkpointed_count(module: nn.Module) -> int:
    return sum(getattr(vars(m).get("forward"), "__func__", None) is _checkpointed_forward for m in module.modules())


def _ask_model(model: nn.Module) -> int:
    """``model.set_grad_checkpointing()``: the blocks it wrapped (ACC-ViT), or for timm's models, which
    set a flag on the modules that run their blocks through ``checkpoint_seq``, how many it set; 0
    where the model refuses (timm asserts on architectures without support)."""
    before = _checkpointed_count(model)
    try:
        model.set_grad_checkpointing(True)
    except (AssertionError, NotImplementedError):
        return 0
    wrapped = _checkpointed_count(model) - before
    return wrapped or sum(getattr(m, "grad_checkpointing", False) is True for m in model.modules())


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every residual block of ``model`` in training mode; returns how many were wrapped.

    Blocks already wrapped are left as they are, so calling it twice is harmless. A model with no
    known block (a custom network) gives 0.
    """
    wrapped = 0
    outer: list[str] = []  # blocks inside a block (a ConvNeXt block in a design-study layer) are
    # recomputed with it: checkpointing them too would run their forward a third time
    for name, module in model.named_modules():
        if any(prefix == "" or name.startswith(prefix + ".") for prefix in outer):
            continue
        if callable(getattr(module, "set_grad_checkpointing", None)):
            outer.append(name)
            wrapped += _ask_model(module)
        elif isinstance(module, _block_types()):
            outer.append(name)
            wrapped += checkpoint_blocks([module])
    return wrapped
