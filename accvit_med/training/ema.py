"""An exponential moving average (EMA) of a model's weights, as MaxViT fine-tunes with.

torch's :class:`~torch.optim.swa_utils.AveragedModel` with :func:`get_ema_multi_avg_fn` does the
arithmetic; parameters and buffers (BatchNorm's running statistics) are both averaged, as timm's
``ModelEmaV2`` does. The average starts from the weights training starts from (as TensorFlow's
``ExponentialMovingAverage``, which MaxViT uses, does) and after every optimiser step becomes
``decay * ema + (1 - decay) * weights``.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (same device, dtype and memory format), starting at its current weights.

    Args:
        model: the network being trained (not a DDP or compiled wrapper: its state dict keys are kept).
        decay: weight of the old average at each update, in (0, 1); MaxViT uses 0.9999.
    """
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.update_parameters(model)  # the first update copies: the average starts at the initial weights
    ema.eval()  # the average is never trained; BatchNorm in it uses its (averaged) running statistics
    return ema


def horizon_steps(decay: float) -> float:
    """About how many recent steps the average spans (1 / (1 - decay)); 10,000 for MaxViT's 0.9999."""
    return 1.0 / (1.0 - decay)
