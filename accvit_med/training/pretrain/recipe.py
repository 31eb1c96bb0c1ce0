"""Table 4's ImageNet-1K recipe, one :class:`PretrainRecipe` per ACC-ViT variant.

The paper trained with torchvision's classification reference script (``train.py``) on 16 GPUs;
the flags in appendix C.1 are the source of every default here. Two numbers are our choice:

* ``accvit_base`` is not in Table 4. It gets MaxViT-B's stochastic depth 0.4 (ACC-ViT-T/S use
  MaxViT-T/S's 0.2/0.3, so we continue that series), small's learning rate 5e-4 / 5e-6, and a global
  batch of 512 (32 per GPU on 16 GPUs: base costs about twice small's FLOPs, which ran 48 per GPU).
* The paper's flags do not set ``--norm-weight-decay`` or ``--bias-weight-decay``, so the authors'
  runs decayed norms and biases; this recipe (as timm/DeiT do) decays
  neither, nor the relative position bias tables (``--transformer-embedding-decay 0``).

The global batch size is part of the recipe; the per-process batch is a runtime choice. When fewer
GPUs are present, gradients are accumulated so that every optimizer step still sees the global batch
(the learning rate, schedule and EMA decay then stay exactly as published); see
:func:`batch_layout`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

from accvit_med.errors import UserError
from accvit_med.recipe_fields import documented, format_value

# Values shared by every variant (Table 4 and the torchrun commands of appendix C.1).
EPOCHS = 400
WARMUP_EPOCHS = 32
# torchvision's --lr-warmup-decay default: warm-up starts at lr * 0.01 and rises linearly to lr.
WARMUP_DECAY = 0.01
# torchvision's --model-ema-decay default, before the adjustment for batch, steps and epochs.
EMA_BASE_DECAY = 0.99998


@dataclass(frozen=True)
class PretrainRecipe:
    """Every hyper-parameter that defines a pre-training run (saved in checkpoints and config.json)."""

    model: str
    global_batch_size: int = documented(help="Images per optimizer step.")
    lr: float = documented(help="Peak AdamW lr (not rescaled with the batch).")
    min_lr: float = documented(help="Cosine floor.")
    drop_path_rate: float = documented(help="Stochastic depth.")
    weight_decay: float = documented(0.05, help="None on norms, biases, position tables.")
    epochs: int = documented(EPOCHS, help="Epochs.")
    warmup_epochs: int = documented(WARMUP_EPOCHS, help="Linear warm-up.")
    warmup_decay: float = documented(WARMUP_DECAY, help="Warm-up starts at lr x this.")
    label_smoothing: float = documented(0.1, help="Label smoothing.")
    mixup_alpha: float = documented(0.8, help="0 disables.")
    cutmix_alpha: float = documented(0.8, help="0 disables.")
    auto_augment: str = documented("ta_wide", help="ta_wide or none.")
    ra_reps: int = documented(3, help="Repeated augmentation; 1 disables.")
    ema: bool = documented(True, help="Keep an EMA of the weights.")
    ema_steps: int = documented(32, help="Optimizer steps between EMA updates.")
    ema_decay: float = documented(EMA_BASE_DECAY, help="Before torchvision's adjustment.")
    clip_grad_norm: float = documented(1.0, help="0 disables.")
    train_crop_size: int = documented(224, help="Random-resized crop side.")
    val_resize_size: int = documented(224, help="Validation resize.")
    val_crop_size: int = documented(224, help="Validation centre crop.")
    interpolation: str = documented("bicubic", help="bicubic or bilinear.")
    seed: int = documented(0, help="Seed.")
    # Distillation (pretrain --teacher, see .distill): None trains on labels alone.
    teacher: Optional[str] = documented(
        None, help="Distil from this registry baseline's ImageNet weights (e.g. maxvit_t); "
                   "see docs/pretrained-weights.md."
    )
    distill_temperature: float = documented(1.0, help="Softmax temperature of the distillation KL.")
    distill_weight: float = documented(
        1.0, help="Share of the distillation loss (the rest: label loss); 1 needs no labels, "
                  "so --data-path may be a plain image folder."
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> "PretrainRecipe":
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UserError(f"unknown recipe option(s) {', '.join(unknown)}; see `accvit-med pretrain --help`")
        recipe = dataclasses.replace(self, **overrides)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UserError(
                f"--warmup-epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}"
            )
        if self.global_batch_size < 1:
            raise UserError(f"--global-batch-size must be positive, got {self.global_batch_size}")
        if self.auto_augment not in AUTO_AUGMENT_POLICIES:
            raise UserError(
                f"--auto-augment {self.auto_augment!r} is not one of {', '.join(AUTO_AUGMENT_POLICIES)}"
            )
        if self.interpolation not in ("bicubic", "bilinear"):
            raise UserError(f"--interpolation must be bicubic or bilinear, got {self.interpolation!r}")
        if self.ra_reps < 1 or self.ema_steps < 1:
            raise UserError("--ra-reps and --ema-steps must be at least 1")
        if self.distill_temperature <= 0 or not 0 <= self.distill_weight <= 1:
            raise UserError("--distill-temperature must be > 0 and --distill-weight in [0, 1]")
        if min(self.mixup_alpha, self.cutmix_alpha, self.label_smoothing, self.clip_grad_norm) < 0:
            raise UserError("--mixup-alpha, --cutmix-alpha, --label-smoothing and --clip-grad-norm must be >= 0")


AUTO_AUGMENT_POLICIES = ("ta_wide", "none")

# Table 4 (femto ... small) plus our base (see the module docstring).
RECIPES: dict[str, PretrainRecipe] = {
    r.model: r
    for r in (
        PretrainRecipe("accvit_femto", global_batch_size=3072, lr=1e-3, min_lr=1e-5, drop_path_rate=0.0),
        PretrainRecipe("accvit_pico", global_batch_size=2560, lr=1e-3, min_lr=1e-5, drop_path_rate=0.0),
        PretrainRecipe("accvit_nano", global_batch_size=2048, lr=1e-3, min_lr=1e-5, drop_path_rate=0.1),
        PretrainRecipe("accvit_tiny", global_batch_size=1024, lr=1e-3, min_lr=1e-5, drop_path_rate=0.2),
        PretrainRecipe("accvit_small", global_batch_size=768, lr=5e-4, min_lr=5e-6, drop_path_rate=0.3),
        PretrainRecipe("accvit_base", global_batch_size=512, lr=5e-4, min_lr=5e-6, drop_path_rate=0.4),
    )
}


def per_model_defaults() -> dict[str, str]:
    """{field: its Table 4 values by model, as ``--help`` shows them} for the fields each variant sets."""
    shown = {}
    for name in ("global_batch_size", "lr", "min_lr", "drop_path_rate"):
        by_value: dict[object, list[str]] = {}
        for model, recipe in RECIPES.items():
            by_value.setdefault(getattr(recipe, name), []).append(model.removeprefix("accvit_"))
        shown[name] = ", ".join(f"{'/'.join(models)} {format_value(value)}" for value, models in by_value.items())
    return shown


def recipe_for(model: str, **overrides) -> PretrainRecipe:
    """The Table 4 recipe of ``model`` with ``overrides`` (None values are ignored) applied."""
    if model not in RECIPES:
        raise UserError(
            f"no pre-training recipe for model {model!r}; choose one of {', '.join(RECIPES)}"
        )
    return RECIPES[model].replace(**{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class BatchLayout:
    """How the global batch is spread over processes and accumulation steps."""

    global_batch_size: int
    world_size: int
    per_process: int
    accumulation_steps: int = field(default=1)


def batch_layout(global_batch_size: int, world_size: int, per_process: int | None = None) -> BatchLayout:
    """Split ``global_batch_size`` into ``world_size`` processes x ``accumulation_steps`` x ``per_process``.

    Without ``per_process`` each process takes ``global / world_size`` images per step (the paper's
    layout on 16 GPUs). With it (to fit memory on fewer GPUs) the remaining factor is accumulated.
    """
    if per_process is None:
        per_process = math.ceil(global_batch_size / world_size)
    if per_process < 1:
        raise UserError(f"--batch-size must be positive, got {per_process}")
    images_per_micro_step = per_process * world_size
    if global_batch_size % images_per_micro_step:
        raise UserError(
            f"global batch {global_batch_size} is not a multiple of --batch-size {per_process} x "
            f"{world_size} process(es); pick a --batch-size that divides {global_batch_size // world_size}"
            if global_batch_size % world_size == 0
            else f"global batch {global_batch_size} does not split over {world_size} processes; "
            f"set --global-batch-size to a multiple of {world_size}"
        )
    return BatchLayout(
        global_batch_size=global_batch_size,
        world_size=world_size,
        per_process=per_process,
        accumulation_steps=global_batch_size // images_per_micro_step,
    )
