"""Where a command computes: the device a ``--device`` option names, and the precision used on it."""

from __future__ import annotations

import torch

from accvit_med.errors import UserError


def resolve_device(spec: str) -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; an unusable explicit choice is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: torch sees no CUDA device here; pass --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device
