"""``accvit-med pretrain --eval-only``: top-1/top-5 of a checkpoint (and its EMA) on an ImageNet val folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from accvit_med.devices import resolve_device
from accvit_med.errors import UserError
from accvit_med.rundir.checkpoints import load_checkpoint, read_weights_metadata
from accvit_med.training.engine import open_run
from accvit_med.training.pretrain.engine import default_workers
from accvit_med.training.pretrain.imagenet import load_imagenet_folders
from accvit_med.training.pretrain.recipe import RECIPES, PretrainRecipe
from accvit_med.training.pretrain.validation import Metrics, evaluate_topk, val_loader


def evaluate_checkpoint(weights: str | Path, data_path: str | Path, model: Optional[str] = None, *,
                        batch_size: int = 64, workers: Optional[int] = None, device: str = "auto",
                        amp: bool = True, val_transform: Optional[dict[str, Any]] = None,
                        console: Optional[Console] = None) -> dict[str, Metrics]:
    """Top-1/top-5 and loss on ``data_path/val`` of a checkpoint's model (and its EMA, when it has one).

    ``weights``: a pre-training checkpoint (``last.pt``/``best.pt``), or any state dict
    (``.pth``/``.safetensors``, also wrapped in ``model``/``state_dict``); ``model`` is required when
    the file does not name its model. ``val_transform`` overrides ``val_resize_size``,
    ``val_crop_size`` or ``interpolation`` (e.g. torchvision's 232/224 for swin_t). Runs under
    torchrun too (each process evaluates a shard).
    """
    from accvit_med.models import create_model
    from accvit_med.models.weights import read_state_dict

    console = console or Console(stderr=True)
    states = {"model": read_state_dict(weights)}
    stored: dict[str, Any] = {}
    if Path(weights).suffix == ".safetensors":
        stored = read_weights_metadata(Path(weights))
    else:
        raw = load_checkpoint(weights)
        if isinstance(raw, dict):
            stored = raw.get("config") or {}
            if isinstance(raw.get("model_ema"), dict):
                states["model_ema"] = raw["model_ema"]
            if raw.get("classes") is not None:
                stored = {**stored, "classes": list(raw["classes"])}
    stored_model = stored.get("model")
    if model is None and stored_model is None:
        raise UserError(f"{weights} does not say which model it holds; pass --model")
    if model is not None and stored_model is not None and model != stored_model:
        raise UserError(f"{weights} holds {stored_model}, not {model}; pass --model {stored_model} or drop --model")
    name = model or stored_model
    # Only the val transform settings of the recipe are used here; they are the same for every variant.
    recipe = PretrainRecipe(**stored["recipe"]) if "recipe" in stored else RECIPES.get(name, RECIPES["accvit_tiny"])
    recipe = recipe.replace(**{k: v for k, v in (val_transform or {}).items() if v is not None})
    data = load_imagenet_folders(data_path, recipe, train=False)
    if "classes" in stored and stored["classes"] != data.classes:
        raise UserError(f"the class folders of {data_path}/val differ from the classes {weights} was trained on; "
                        "evaluate on the matching val folder")

    with open_run(resolve_device(device), console, amp=amp) as ctx:
        loader = val_loader(data.val, ctx.dist, batch_size, default_workers(ctx.dist) if workers is None else workers,
                            ctx.device.type == "cuda")
        network = create_model(name, num_classes=len(data.classes))
        results = {}
        for which, state in states.items():
            try:
                network.load_state_dict(state)
            except RuntimeError as err:
                raise UserError(f"{weights} ({which}) does not fit {name} with {len(data.classes)} classes "
                                f"({str(err).splitlines()[0]}); pass the --model it was trained as") from None
            network.to(ctx.device)
            results[which] = evaluate_topk(network, loader, ctx, len(data.classes), f"val ({which})")
        return results
