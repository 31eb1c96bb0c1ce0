"""Dilated ("atrous") and windowed partitions of a feature map, as the paper writes them (appendix A.1).

The reference path uses these einops patterns literally. The fast path in :mod:`acc_vit` does not
rearrange tensors branch by branch: it builds, once per input size, an index that maps every token
of every branch's 7x7 windows to its pixel, computed by running these same patterns on a grid of
pixel numbers. The two paths therefore agree by construction, and the tests check it.
"""

from __future__ import annotations

import torch
from einops import rearrange

WINDOW = 7  # window side of all attention branches (MaxViT's partition size)


def dilate(x: torch.Tensor, rate: int) -> torch.Tensor:
    """Split ``(B, C, H, W)`` into ``rate**2`` dilated maps: pixels ``rate`` apart end up adjacent."""
    return rearrange(x, "b c (h hs) (w ws) -> (b hs ws) c h w", hs=rate, ws=rate)


def undilate(x: torch.Tensor, rate: int) -> torch.Tensor:
    """Inverse of :func:`dilate`."""
    return rearrange(x, "(b hs ws) c h w -> b c (h hs) (w ws)", hs=rate, ws=rate)


def window_partition(x: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, windows, window*window, C)``, windows in row-major order."""
    return rearrange(x, "b c (gh p) (gw q) -> b (gh gw) (p q) c", p=window, q=window)


def window_departition(x: torch.Tensor, height: int, width: int, window: int = WINDOW) -> torch.Tensor:
    """Inverse of :func:`window_partition` for a map of ``height`` x ``width`` pixels."""
    return rearrange(
        x, "b (gh gw) (p q) c -> b c (gh p) (gw q)", gh=height // window, gw=width // window, p=window, q=window
    )


def atrous_window_pixels(height: int, width: int, rate: int, window: int = WINDOW) -> torch.Tensor:
    """Pixel numbers (row-major in the undilated map) of each token of each window of one branch.

    Returns a ``(windows, window*window)`` long tensor. Every branch of a stage has the same number
    of windows per image, ``height*width / window**2``: dilation only permutes the pixels.
    """
    pixels = torch.arange(height * width).view(1, 1, height, width)
    return window_partition(dilate(pixels, rate), window).reshape(-1, window * window)


def relative_position_index(window: int = WINDOW) -> torch.Tensor:
    """``(window**2, window**2)`` index into a ``(2*window-1)**2`` relative position bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return relative[..., 0] * (2 * window - 1) + relative[..., 1]
