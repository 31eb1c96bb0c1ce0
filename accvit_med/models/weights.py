"""Loading weights: torchvision's ImageNet files through torch.hub's cache, or a local state dict.

A checkpoint is data, never code: ``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``
and ``.safetensors`` with safetensors. Our own training checkpoints wrap the state dict as
``{"model": ..., "optimizer": ..., ...}``; a ``{"state_dict": ...}`` wrapper (Lightning, timm) works too.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Callable, TypeVar
from urllib.error import URLError

import torch
from torch import nn

from accvit_med.errors import UserError

log = logging.getLogger(__name__)

# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def hub_checkpoint_dir() -> Path:
    """Where torch.hub keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_weights_file(weights_enum) -> Path:
    """The cache path torchvision uses for ``weights_enum`` (a ``Weights`` member)."""
    return hub_checkpoint_dir() / os.path.basename(weights_enum.url)


T = TypeVar("T")


def load_torchvision_state_dict(weights_enum) -> dict[str, torch.Tensor]:
    """Fetch a torchvision weights file: from the hub cache if present, else by download.

    Offline and without the file, raise one UserError naming the file, the folder and the URL.
    """
    # Served from the cache without network access when the file is there (torch.hub's rule).
    return from_hub_cache(weights_enum, lambda: weights_enum.get_state_dict(progress=True, check_hash=True))


def from_hub_cache(weights_enum, load: Callable[[], T]) -> T:
    """``load()`` (anything that reads ``weights_enum`` through torch.hub, e.g. torchvision's builder),
    with a missing or unreadable file as one UserError naming the file, the folder and the URL."""
    path = torchvision_weights_file(weights_enum)
    try:
        return load()
    except (URLError, OSError, RuntimeError) as err:
        if path.exists():
            raise UserError(f"cannot read the ImageNet weights file {path} ({err}); delete it and retry") from err
        raise UserError(
            f"the ImageNet weights file {path.name} is not in {path.parent} and could not be downloaded "
            f"({type(err).__name__}); download {weights_enum.url} and put it in {path.parent} "
            "(or set TORCH_HOME to a folder whose hub/checkpoints holds it)"
        ) from err


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt`` (weights only), unwrapping
    ``{"model": ...}`` / ``{"state_dict": ...}`` and DDP / torch.compile key prefixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; pass the path of a .pth or .safetensors state dict")
    if path.stat().st_size == 0:
        raise UserError(f"weights file {path} is empty (0 bytes), e.g. an interrupted copy; copy it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise UserError(f"cannot read {path} as safetensors ({err}); check the file is complete") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, IndexError, ValueError) as err:
            raise UserError(
                f"cannot load {path} as a weights-only checkpoint ({str(err).splitlines()[0]}); "
                "save it with torch.save(model.state_dict(), path) or as .safetensors"
            ) from err
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict (a mapping of names to tensors); pass a model's weights")
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_into(model: nn.Module, state: dict[str, torch.Tensor], head: str, source: str) -> None:
    """Load ``state`` into ``model``; keep the model's own (fresh) head when the class counts differ.

    ``head`` is the module name of the final Linear layer. Missing and unexpected keys are logged;
    a checkpoint that shares no key with the model, or whose tensors have other shapes outside the
    head, is another architecture and raises a UserError.
    """
    own = model.state_dict()
    head_keys = [key for key in own if key.startswith(head + ".")]
    swapped = [key for key in head_keys if key in state and state[key].shape != own[key].shape]
    if swapped:
        log.warning(
            "%s: classifier head replaced (checkpoint has %d classes, model has %d); it is freshly initialised",
            source, state[swapped[0]].shape[0], own[swapped[0]].shape[0],
        )
        state = {key: value for key, value in state.items() if key not in head_keys}
    mismatched = [key for key in state if key in own and state[key].shape != own[key].shape]
    if mismatched:
        shown = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:3])
        raise UserError(f"{source} does not fit this model: tensor shapes differ ({shown}); pick the matching model")
    if not set(state) & set(own):
        raise UserError(f"{source} shares no parameter name with this model; pick the model it was trained as")
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if key not in head_keys or not swapped]
    if missing:
        log.warning("%s: %d keys missing, left at initialisation: %s", source, len(missing), _preview(missing))
    if result.unexpected_keys:
        log.warning("%s: %d unexpected keys ignored: %s", source, len(result.unexpected_keys),
                    _preview(result.unexpected_keys))


def _preview(keys: list[str], shown: int = 5) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more
