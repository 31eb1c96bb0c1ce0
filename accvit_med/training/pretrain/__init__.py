"""ImageNet pre-training of ACC-ViT with the paper's recipe (appendix C.1, Table 4).

>>> from accvit_med.training.pretrain import PretrainData, pretrain, recipe_for
>>> recipe_for("accvit_tiny").global_batch_size
1024
>>> pretrain("accvit_tiny", {}, PretrainData("imagenet"))                 # doctest: +SKIP

Modules: recipe (Table 4 per variant), schedule (warm-up + cosine per step), mixing (mixup/cutmix),
ema (torchvision's EMA), sampler (repeated augmentation), param_groups (weight-decay exclusions),
imagenet (folders and transforms), engine (the run and its resume), validation (top-1/top-5),
eval_only (evaluate_checkpoint: a weights file on the val folder).
"""

from __future__ import annotations

from accvit_med.lazy import lazy_exports

# Names resolved on first use (PEP 562), so that reading the recipe (the CLI's --help derives the
# pretrain options from it) does not import torch through the engine.
_EXPORTS = {
    "PretrainData": "engine", "PretrainOptions": "engine", "PretrainResult": "engine", "pretrain": "engine",
    "evaluate_checkpoint": "eval_only", "Metrics": "validation",
    "RECIPES": "recipe", "PretrainRecipe": "recipe", "batch_layout": "recipe", "recipe_for": "recipe",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
