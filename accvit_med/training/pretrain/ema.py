"""Pre-training's EMA decay: torchvision's adjustment of ``--model-ema-decay`` (the average itself
is :class:`accvit_med.training.ema.ExponentialMovingAverage`, shared with fine-tuning).

The engine updates the average every ``ema_steps`` optimizer steps and, during warm-up, restarts
it so that it keeps copying the weights (torchvision does the same).
"""

from __future__ import annotations

from accvit_med.training.ema import ExponentialMovingAverage

__all__ = ["ExponentialMovingAverage", "adjusted_ema_decay"]


def adjusted_ema_decay(base_decay: float, global_batch_size: int, ema_steps: int, epochs: int) -> float:
    """torchvision's decay adjustment: ``1 - min(1, (1 - base_decay) * global_batch * ema_steps / epochs)``.

    It keeps the averaging horizon (in images) about the same whatever the batch, the update period
    and the number of epochs. torchvision writes ``world_size * batch_size``, the global batch.
    """
    adjust = global_batch_size * ema_steps / epochs
    return 1.0 - min(1.0, (1.0 - base_decay) * adjust)
