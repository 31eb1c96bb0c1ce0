"""The fine-tuning recipe: appendix C.2 of the ACC-ViT paper as defaults, overridable by a file.

Paper (C.2, after MaxViT): AdamW at 5e-5 with no scheduler or warm-up, RandAugment as the only
augmentation, label smoothing 0.1, gradient clipping 1.0, 100 epochs, the checkpoint with the best
validation loss evaluated on test, 224 input, ImageNet normalisation. C.2 says it adopts MaxViT's
fine-tuning strategy; the values it leaves out come from MaxViT's own fine-tuning configuration
(google-research/maxvit, ``maxvit/models/hp/vision_i1k.py``, ``i1k_ft_update``): weight decay 1e-8
and RandAugment 2 ops at magnitude 15. (0.05 is MaxViT's *pre-training* weight decay.) Two of
MaxViT's values are a documented choice here instead: batch 512 would be one step per epoch on
BUSI's 468 training images, so the batch stays 32; and the weight EMA (decay 0.9999 there, inherited
from its base config) is ``ema_decay``, off unless asked for. All values are recorded in config.json.

Runs started before this recipe (weight decay 0.05, RandAugment magnitude 9) resume with the values
they were started with: a stored recipe's missing keys take the defaults of the time it lacked them
(:data:`DEFAULTS_BEFORE_KEY`), never today's.

Precedence: defaults < ``--config FILE`` (JSON, TOML or YAML) < options given on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from accvit_med.errors import UserError
from accvit_med.recipe_fields import documented, field_kinds

BALANCE_CHOICES = ("none", "weights", "sampler")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass
class FinetuneConfig:
    """A fine-tuning run's data, model and recipe. Fields made with :func:`documented` are also
    ``accvit-med finetune`` options (their help and default shown by ``--help`` come from here);
    the others are set by a shared option (data, device, workers) or only by a recipe file."""

    # What to train on (options shared with `prepare`: accvit_med.cli.options).
    dataset: Optional[str] = None
    split: Optional[str] = None
    data_dir: Optional[str] = None
    # What to train.
    model: str = documented("accvit_tiny", help="Registered model name (`accvit-med models`).")
    weights: str = documented(
        "imagenet", help="imagenet (ACC-ViT: inherited from MaxViT-T), maxvit_t, none (from scratch) or a checkpoint file."
    )
    # The recipe (appendix C.2 unless noted).
    epochs: int = documented(100, help="Epochs.")
    batch_size: int = documented(32, help="Images per step, per process.")  # not given in the paper
    lr: float = documented(5e-5, help="AdamW learning rate, constant.")
    # MaxViT's i1k_ft_update (not given in C.2)
    weight_decay: float = documented(1e-8, help="AdamW weight decay (MaxViT's fine-tuning value).")
    label_smoothing: float = 0.1
    clip_grad_norm: float = 1.0
    image_size: int = documented(224, help="Input side.")
    randaugment_ops: int = 2  # MaxViT's i1k_ft_update (not given in C.2)
    randaugment_magnitude: int = 15  # MaxViT's i1k_ft_update (not given in C.2)
    # EMA of the weights (MaxViT: 0.9999); None = off. When on, validation, the best checkpoint and
    # the final evaluation use the EMA weights.
    ema_decay: Optional[float] = documented(
        None, flag="--ema", metavar="DECAY", shown_default="off",
        help="Keep an EMA of the weights (MaxViT: 0.9999); validate, keep and evaluate it.",
    )
    # early stopping on validation loss; None = train all epochs
    patience: Optional[int] = documented(None, help="Stop after this many epochs without a better val loss.")
    balance: str = documented("none", help="none, weights (weighted loss) or sampler.")
    seed: int = documented(42, help="Seed of the head, sample order, augmentation and dropout.")
    # BatchNorm running-statistics momentum; None keeps each network's own (not in the paper; the
    # demo's short from-scratch runs use 0.1 so the statistics catch up within a few epochs).
    batchnorm_momentum: Optional[float] = None
    # How to run it (these never change the numbers on CPU, except amp).
    device: str = "auto"
    amp: bool = documented(False, help="bf16 (else fp16) autocast on CUDA.")
    channels_last: bool = documented(False, help="NHWC memory format.")
    compile: bool = documented(False, help="torch.compile the model.")
    grad_checkpointing: bool = documented(
        False, help="Recompute each block's activations in backward: lower peak memory, slower steps."
    )
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1),
                         metadata={"shown_default": "min(8, CPUs)"})
    cache: bool = documented(False, help="Use (and fill) the resized-image cache.")
    cache_dir: Optional[str] = None

    def validate(self) -> "FinetuneConfig":
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "image_size": self.image_size}
        for name, value in positive.items():
            if int(value) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise UserError(f"--ema must be between 0 and 1 (e.g. 0.9999), got {self.ema_decay}")
        if self.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.workers}")
        if self.patience is not None and self.patience < 1:
            raise UserError(f"--patience must be at least 1, got {self.patience}")
        if self.batchnorm_momentum is not None and not 0 < self.batchnorm_momentum <= 1:
            raise UserError(f"batchnorm_momentum must be in (0, 1], got {self.batchnorm_momentum}")
        if self.balance not in BALANCE_CHOICES:
            raise UserError(f"--balance must be one of {', '.join(BALANCE_CHOICES)}, got '{self.balance}'")
        if self.device not in DEVICE_CHOICES and not str(self.device).startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(FinetuneConfig))
_FIELD_KINDS: dict[str, type] = field_kinds(FinetuneConfig)  # what a recipe file's value is coerced to

# A recipe stored before a key existed ran with the value below, not with today's default. (Keys
# present in every stored recipe are listed too: a hand-trimmed config must not switch recipes.)
DEFAULTS_BEFORE_KEY: dict[str, Any] = {
    "ema_decay": None,
    "weight_decay": 0.05,
    "randaugment_ops": 2,
    "randaugment_magnitude": 9,
}


def stored_recipe(stored: Mapping[str, Any]) -> FinetuneConfig:
    """The recipe a run was started with, from its stored dict (config.json's recipe, last.pt's config).

    A recipe without ``ema_decay`` predates the MaxViT fine-tuning defaults: its missing keys take
    :data:`DEFAULTS_BEFORE_KEY`. Unknown keys (from a newer version) are ignored.
    """
    values = {k: stored[k] for k in FIELD_NAMES if k in stored}
    if "ema_decay" not in stored:
        values = {**DEFAULTS_BEFORE_KEY, **values}
    return FinetuneConfig(**values)


# Fields a resumed run may change: how to run (another machine, a moved data folder) and how long.
RESUMABLE_CHANGES = ("device", "workers", "compile", "grad_checkpointing", "cache", "cache_dir", "data_dir", "epochs", "patience")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file: JSON, TOML or YAML, with keys named like FinetuneConfig's fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; pass an existing JSON, TOML or YAML file to --config")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"reading '{path}' needs PyYAML (pip install pyyaml); or write the recipe as TOML or JSON") from None
            data = yaml.safe_load(text)
        else:
            raise UserError(f"config file '{path}' must end in .json, .toml, .yaml or .yml")
    except UserError:
        raise
    except Exception as err:  # each parser has its own error type; all mean "not valid syntax"
        raise UserError(f"config file '{path}' is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a table of recipe keys, e.g. lr = 5e-5")
    # Accept dashes as on the command line (batch-size) as well as underscores.
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"config file '{path}' has unknown keys {unknown}; known keys: {', '.join(FIELD_NAMES)}")
    return data


def _coerce(name: str, value: Any) -> Any:
    """Bring a value from a file to the field's type (JSON/TOML may give 1 for 1.0, and so on)."""
    if value is None:
        return None
    kind = _FIELD_KINDS.get(name, str)
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise UserError(f"recipe key '{name}' has a bad value {value!r} ({err})") from None


def resolve_config(
    overrides: Mapping[str, Any], config_file: Optional[str | os.PathLike] = None
) -> FinetuneConfig:
    """Defaults, then the file, then ``overrides`` (entries that are None mean 'not given')."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown recipe fields {unknown}")
    return FinetuneConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def format_recipe(config: FinetuneConfig) -> str:
    """The resolved recipe, one ``key = value`` per line, for printing before a run."""
    width = max(len(name) for name in FIELD_NAMES)
    return "\n".join(f"{name:<{width}} = {getattr(config, name)!r}" for name in FIELD_NAMES)
