"""The checks of a run's model choice (model, weights, input size), made before anything is written.

They import no torch: ``accvit-med sweep`` makes them for every run of a plan, in a process that
only starts ``finetune`` subprocesses. :mod:`.model_setup` re-exports them beside the model building.
"""

from __future__ import annotations

from pathlib import Path

from accvit_med.errors import UserError
from accvit_med.models.registry import check_image_size, inherits_maxvit, model_info
from accvit_med.training.recipe import FinetuneConfig


def check_model_choice(config: FinetuneConfig) -> None:
    """Fail on an unknown model, missing weights file or bad input size before anything is written."""
    info = model_info(config.model)
    spec = config.weights
    if inherits_maxvit(config.model, spec):  # ACC-ViT from MaxViT-T; refuses models wider than it
        return check_image_size(config.model, config.image_size)
    # The registry names each model's torchvision weights; asking torchvision for them would import it.
    if spec == "imagenet" and info.imagenet_weights is None:
        raise UserError(
            f"{config.model} has no public ImageNet weights; pass --weights PATH (a .pth or .safetensors "
            "state dict, e.g. from your own ImageNet pre-training) or --weights none to train from scratch"
        )
    if spec not in ("imagenet", "none", "maxvit_t") and not Path(spec).is_file():
        raise UserError(f"--weights '{spec}' is neither imagenet, maxvit_t, none nor an existing file; "
                        "pass one of those")
    check_image_size(config.model, config.image_size)
