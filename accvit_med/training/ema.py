"""An exponential moving average (EMA) of a model's weights: fine-tuning's ``--ema`` (as MaxViT
fine-tunes with) and pre-training's ``ema`` (torchvision's ``--model-ema``).

torch's :class:`~torch.optim.swa_utils.AveragedModel` with :func:`get_ema_multi_avg_fn` does the
arithmetic; parameters and buffers (BatchNorm's running statistics) are both averaged, as timm's
``ModelEmaV2`` does. After every update the average becomes ``decay * ema + (1 - decay) * weights``;
the first update copies the weights (so does the first after :meth:`ExponentialMovingAverage.restart`).
Fine-tuning's average starts from the weights training starts from (as TensorFlow's
``ExponentialMovingAverage``, which MaxViT uses, does): :func:`make_ema`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class ExponentialMovingAverage(AveragedModel):
    """EMA of ``model``'s parameters and buffers with a fixed ``decay`` in (0, 1).

    Args:
        model: the network being trained (not a DDP or compiled wrapper: its state dict keys are kept).
        decay: weight of the old average at each update; MaxViT uses 0.9999.
        device: where the average lives (default: with the model).
    """

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str | None = None):
        super().__init__(model, device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay

    def restart(self) -> None:
        """Make the next update copy the weights again (pre-training's warm-up)."""
        self.n_averaged.fill_(0)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict, with the same keys as the source model's."""
        return self.module.state_dict()


def make_ema(model: nn.Module, decay: float) -> ExponentialMovingAverage:
    """An EMA copy of ``model`` (same device, dtype and memory format), starting at its current weights."""
    ema = ExponentialMovingAverage(model, decay)
    ema.update_parameters(model)  # the first update copies: the average starts at the initial weights
    ema.eval()  # the average is never trained; BatchNorm in it uses its (averaged) running statistics
    return ema


def horizon_steps(decay: float) -> float:
    """About how many recent steps the average spans (1 / (1 - decay)); 10,000 for MaxViT's 0.9999."""
    return 1.0 / (1.0 - decay)


def short_horizon_note(decay: float, steps: int) -> Optional[str]:
    """A note when the average spans more steps than the run has (it then stays near the start)."""
    if horizon_steps(decay) <= steps:
        return None
    return (f"[yellow]note:[/] --ema {decay} averages over about {horizon_steps(decay):.0f} steps but the run "
            f"has about {steps}; the average stays close to the starting weights")
