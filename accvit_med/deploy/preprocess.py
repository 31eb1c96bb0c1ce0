"""A run's evaluation preprocessing in numpy: the same decode-resize-crop as training, then
ImageNet normalisation, computed in float32 as torchvision's ToTensor + Normalize compute it."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from accvit_med.datasets.cache import decode_resized


def normalise(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(3, H, W) float32 of an RGB image: pixels / 255, minus ``mean``, divided by ``std``."""
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    shift = np.asarray(mean, dtype=np.float32)
    scale = np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(((pixels - shift) / scale).transpose(2, 0, 1))


def load_normalised(path: str | os.PathLike, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The (3, size, size) input of one image, as the run's evaluation feeds its model."""
    return normalise(decode_resized(path, size), mean, std)
