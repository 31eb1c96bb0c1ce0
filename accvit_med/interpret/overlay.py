"""Pictures of Grad-CAM maps: a heat map blended on the input, and the Figure 4 style grid."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from accvit_med.fileio import atomic_write_bytes

COLORMAP = "jet"  # the colour scale of the paper's Figure 4 (and of most Grad-CAM figures)


def blend(image: Image.Image, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` (RGB, as the model saw it before normalisation) under a heat map of ``cam`` in [0, 1]."""
    import matplotlib

    if cam.shape != (image.height, image.width):
        raise ValueError(f"cam of shape {cam.shape} does not match the image ({image.height}, {image.width})")
    heat = matplotlib.colormaps[COLORMAP](np.clip(cam, 0.0, 1.0))[..., :3]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    mixed = (1.0 - alpha) * pixels + alpha * heat
    return Image.fromarray(np.round(mixed * 255.0).astype(np.uint8), mode="RGB")


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class GridRow:
    """One image of the grid: the input, its title and one overlay (with a caption) per run."""

    original: Image.Image
    title: str
    overlays: Sequence[Image.Image]
    captions: Sequence[str]


def save_grid(rows: Sequence[GridRow], run_labels: Sequence[str], path: str | os.PathLike,
              cell_inches: float = 2.4, title: Optional[str] = None) -> None:
    """Rows = images; columns = the input, then one Grad-CAM overlay per run (as in Figure 4)."""
    # A bare Figure, not pyplot: no global figure registry to leak in long loops, no backend switch.
    from matplotlib.figure import Figure

    columns = 1 + len(run_labels)
    figure = Figure(figsize=(cell_inches * columns, (cell_inches + 0.35) * len(rows)))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        cells = [(row.original, row.title)] + list(zip(row.overlays, row.captions))
        for c, (picture, caption) in enumerate(cells):
            axis = axes[r][c]
            axis.imshow(picture)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlabel(caption, fontsize=7)
            if r == 0:
                axis.set_title("input" if c == 0 else run_labels[c - 1], fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    # No "Software" stamp: the same inputs give byte-identical PNGs.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
