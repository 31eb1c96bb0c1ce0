"""What a prediction command produces, and its test-time augmentation choices, without torch.

Both ``predict --run`` (PyTorch) and ``predict --onnx`` (ONNX Runtime) return an
:class:`ImagePredictions`, so their CSV and table are the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_text
from accvit_med.reports.predictions import predictions_csv

TTA_CHOICES = ("none", "h", "hv")


def check_tta(tta: str) -> None:
    if tta not in TTA_CHOICES:
        raise UserError(f"--tta must be one of {', '.join(TTA_CHOICES)}, got '{tta}'")


@dataclass
class ImagePredictions:
    """Softmax probabilities (n, k) of ``paths`` over ``classes``, rows in ``paths`` order."""

    paths: list[str]
    probabilities: np.ndarray
    classes: list[str]

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def to_csv(self) -> str:
        """``path,pred,prob_<class>...``: the predictions CSV without a label column."""
        return predictions_csv(self.paths, None, self.predicted, self.probabilities, self.classes)

    def write_csv(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_csv())


def default_workers() -> int:
    """Data-loading processes when none are asked for: decoding is the bottleneck on CPU."""
    return min(4, os.cpu_count() or 1)
