"""Checkpoints: plain tensors and Python values, written atomically, loaded with weights_only.

Contents of ``last.pt``: ``model`` (state dict), ``optimizer``, ``scaler``, ``epoch`` (the last
completed epoch; 0 = before training), ``rng`` (torch, cuda, numpy and Python states as tensors and
lists), ``config`` (the resolved recipe), ``classes``, ``best_val_loss``, ``best_epoch``,
``history`` (one dict per completed epoch). ``best.pt`` holds the same keys except the optimizer,
scaler and RNG states. Nothing in a checkpoint needs unpickling code, so
``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_bytes


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # Temp file + rename: a kill during the write leaves the previous checkpoint intact.
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; check the run directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise UserError(f"checkpoint '{path}' cannot be read ({type(err).__name__}); it is damaged or not an accvit-med checkpoint") from None


def capture_rng_state() -> dict[str, Any]:
    """Every random state that training touches, as tensors and lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


def check_classes(checkpoint_classes: list[str], split_classes: list[str], what: str) -> None:
    """A checkpoint is only valid for the class list (and order) it was trained with."""
    if list(checkpoint_classes) != list(split_classes):
        raise UserError(
            f"{what} was trained on classes {list(checkpoint_classes)} but the split has "
            f"{list(split_classes)}; use a split with the same classes in the same order"
        )
