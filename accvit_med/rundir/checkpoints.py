"""Checkpoints: plain tensors and Python values, written atomically, loaded with weights_only.

One schema for ``checkpoints/last.pt`` of both tasks (``kind`` says which):

=================  ===========================================================================
key                value
=================  ===========================================================================
kind               ``"finetune"`` or ``"pretrain"`` (absent in checkpoints written before it
                   existed: :func:`checkpoint_kind` infers it)
model              the model's state dict
optimizer, scaler  their state dicts (the scaler's is empty without fp16 loss scaling)
epoch              the last completed epoch; 0 = written before training
rng                torch, cuda, numpy and Python states as tensors and lists
config             finetune: the resolved recipe (FinetuneConfig fields); pretrain:
                   ``{"recipe", "model", "task": "pretrain"}``
classes            class names in the model's output order
history            one dict per completed epoch (the rows of history.csv)
=================  ===========================================================================

Task-specific keys: finetune adds ``split_sha256``, ``best_val_loss``, ``best_epoch``,
``stopped_early`` and, with ``--ema``, ``ema`` (the AveragedModel's state); pretrain adds
``model_ema`` (state dict or None), ``model_ema_updates``, ``global_step``. ``best.pt`` is the same
dict at the best epoch; finetune leaves out the optimizer, scaler, RNG and ``ema`` states there
(with ``--ema`` its ``model`` is the average). Nothing needs unpickling code, so
``torch.load(path, weights_only=True)`` reads every checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from accvit_med.rundir.layout import RunDir
    from accvit_med.rundir.record import RunRecord


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # Temp file + rename: a kill during the write leaves the previous checkpoint intact.
    atomic_write_bytes(path, buffer.getvalue())


KINDS = ("finetune", "pretrain")


def training_state(kind: str, *, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   epoch: int, config: dict, classes: list[str], history: list[dict], **extra: Any) -> dict[str, Any]:
    """A checkpoint in the schema above, with the state dicts and RNG states as they are now.

    Args:
        kind: ``finetune`` or ``pretrain``.
        model, optimizer, scaler: whose state dicts to store.
        epoch: the last completed epoch (0 before training).
        config: the recipe as the task stores it.
        classes: class names in output order.
        history: the completed epochs' rows.
        extra: the task's own keys (see above).
    """
    return {
        "kind": kind,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        # Resuming reseeds every epoch from (seed, epoch, rank); the states are kept for code that
        # continues a run in its own way.
        "rng": capture_rng_state(),
        "config": config,
        "classes": classes,
        "history": history,
        **extra,
    }


def checkpoint_kind(state: dict[str, Any]) -> str:
    """``finetune`` or ``pretrain``; older checkpoints without ``kind`` say it through their config."""
    if state.get("kind") in KINDS:
        return state["kind"]
    from accvit_med.rundir.layout import run_kind

    config = state.get("config")
    return run_kind(config) if isinstance(config, dict) else "finetune"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist; check the run directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise UserError(f"checkpoint '{path}' cannot be read ({type(err).__name__}); "
                        "it is damaged or not an accvit-med checkpoint") from None


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


def save_weights(path: str | os.PathLike, state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """A state dict as safetensors (pure tensors, nothing to unpickle); ``metadata`` values as JSON."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    atomic_write_bytes(path, save(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()}))


def read_weights_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    decoded = {}
    for key, value in raw.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:  # metadata written by another tool
            decoded[key] = value
    return decoded


def load_run_model(run: "RunDir", record: "RunRecord", which: str = "best",
                   model_factory: Optional[Callable[[int], nn.Module]] = None) -> tuple[nn.Module, dict[str, Any]]:
    """A fine-tuning run's network with the weights of checkpoints/<which>.pt, and that checkpoint.

    The network is the registry model the run names at the run's input size, or ``model_factory``'s
    for a run of a custom network (whose record names the factory instead of a registry model). The
    checkpoint's classes must be the run's. Evaluate, predict and Grad-CAM all load a run here.
    """
    file = run.checkpoint(which)
    if not file.is_file():
        other = "last" if which == "best" else "best"
        raise UserError(
            f"run '{run.path}' has no checkpoint {file.relative_to(run.path)}; finish or resume training "
            f"(accvit-med finetune --resume) or pass --checkpoint {other}"
        )
    state = load_checkpoint(file)
    classes = list(record.classes)
    check_classes(state["classes"], classes, f"checkpoint '{file}'")
    if model_factory is not None:
        model = model_factory(len(classes))
    elif record.model_factory:
        raise UserError(
            f"run '{run.path}' was trained with a custom network ({record.model_factory}); load it in "
            "Python with accvit_med.interpret.load_run(run, model_factory=...)"
        )
    else:
        from accvit_med.models import create_model

        model = create_model(record.model, num_classes=len(classes), weights=None, image_size=record.recipe.image_size)
    model.load_state_dict(state["model"])
    return model, state
