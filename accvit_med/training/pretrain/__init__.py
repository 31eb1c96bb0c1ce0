"""ImageNet pre-training of ACC-ViT with the paper's recipe (appendix C.1, Table 4).

>>> from accvit_med.training.pretrain import PretrainOptions, pretrain, recipe_for
>>> recipe_for("accvit_tiny").global_batch_size
1024
>>> pretrain("accvit_tiny", {}, PretrainOptions(data_path="imagenet"))      # doctest: +SKIP

Modules: recipe (Table 4 per variant), schedule (warm-up + cosine per step), mixing (mixup/cutmix),
ema (torchvision's EMA), sampler (repeated augmentation), param_groups (weight-decay exclusions),
imagenet (folders and transforms), engine (the run and its resume), validation (top-1/top-5),
evaluate_checkpoint (eval-only).
"""

from accvit_med.training.pretrain.engine import PretrainOptions, PretrainResult, default_out, pretrain
from accvit_med.training.pretrain.evaluate_checkpoint import evaluate_checkpoint
from accvit_med.training.pretrain.recipe import RECIPES, PretrainRecipe, batch_layout, recipe_for
from accvit_med.training.pretrain.validation import Metrics

__all__ = [
    "RECIPES",
    "Metrics",
    "PretrainOptions",
    "PretrainRecipe",
    "PretrainResult",
    "batch_layout",
    "default_out",
    "evaluate_checkpoint",
    "pretrain",
    "recipe_for",
]
