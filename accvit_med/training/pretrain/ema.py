"""Exponential moving average of the weights, as torchvision's reference (``--model-ema``).

``ExponentialMovingAverage`` is a :class:`torch.optim.swa_utils.AveragedModel` whose update is
``ema = decay * ema + (1 - decay) * weights`` over parameters and buffers (BatchNorm statistics
included); its first update copies the weights. The engine calls ``update_parameters`` every
``ema_steps`` optimizer steps and, during warm-up, resets the average so that it keeps copying the
weights (torchvision does the same).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def adjusted_ema_decay(base_decay: float, global_batch_size: int, ema_steps: int, epochs: int) -> float:
    """torchvision's decay adjustment: ``1 - min(1, (1 - base_decay) * global_batch * ema_steps / epochs)``.

    It keeps the averaging horizon (in images) about the same whatever the batch, the update period
    and the number of epochs. torchvision writes ``world_size * batch_size``, the global batch.
    """
    adjust = global_batch_size * ema_steps / epochs
    return 1.0 - min(1.0, (1.0 - base_decay) * adjust)


class ExponentialMovingAverage(AveragedModel):
    """EMA of ``model``'s parameters and buffers with a fixed ``decay``."""

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str | None = None):
        self.decay = decay

        def ema_avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
            return decay * averaged + (1.0 - decay) * current

        super().__init__(model, device, ema_avg, use_buffers=True)

    def restart(self) -> None:
        """Make the next update copy the weights again (used during warm-up)."""
        self.n_averaged.fill_(0)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict, with the same keys as the source model's."""
        return self.module.state_dict()
