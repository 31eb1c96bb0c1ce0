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

Precedence: defaults < ``--config FILE`` (JSON, TOML or YAML) < options given on the command line
(:mod:`.recipe_file`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from accvit_med.errors import UserError
from accvit_med.recipe_fields import documented

BALANCE_CHOICES = ("none", "weights", "sampler")
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _runtime(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A field that says how or where a run runs, never what it computes (``runtime`` metadata):
    a resumed run takes today's value, and two runs that differ only there have the same recipe."""
    if "help" in kwargs:
        made = documented(default, **kwargs)
        return dataclasses.field(default=made.default, default_factory=made.default_factory,
                                 metadata={**made.metadata, "runtime": True})
    return dataclasses.field(default=default, metadata={"runtime": True, **kwargs})


def _resumable(made: Any) -> Any:
    """A recipe field a resumed run may change (how long it trains: ``--epochs``, ``--patience``)."""
    return dataclasses.field(default=made.default, metadata={**made.metadata, "resumable": True})


@dataclass(frozen=True)
class DataSpec:
    """What a run trains on (options shared with `prepare`: accvit_med.cli.options)."""

    dataset: Optional[str] = None
    split: Optional[str] = None
    data_dir: Optional[str] = _runtime(None)  # a data folder that moved since the run started


@dataclass(frozen=True)
class FinetuneRecipe:
    """What changes a fine-tuning run's numbers (appendix C.2 unless noted). Fields made with
    :func:`documented` are also ``accvit-med finetune`` options (their help and default shown by
    ``--help`` come from here); the others are set only by a recipe file."""

    # What to train.
    model: str = documented("accvit_tiny", help="Registered model name (`accvit-med models`).")
    weights: str = documented(
        "imagenet",
        help="imagenet (ACC-ViT: inherited from MaxViT-T), maxvit_t, none (from scratch) or a checkpoint file.",
    )
    epochs: int = _resumable(documented(100, help="Epochs."))
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
    patience: Optional[int] = _resumable(
        documented(None, help="Stop after this many epochs without a better val loss."))
    balance: str = documented("none", help="none, weights (weighted loss) or sampler.")
    seed: int = documented(42, help="Seed of the head, sample order, augmentation and dropout.")
    # BatchNorm running-statistics momentum; None keeps each network's own (not in the paper; the
    # demo's short from-scratch runs use 0.1 so the statistics catch up within a few epochs).
    batchnorm_momentum: Optional[float] = None
    # How the arithmetic is done: autocast changes the numbers on CUDA, so these stay with the recipe.
    amp: bool = documented(False, help="bf16 (else fp16) autocast on CUDA.")
    channels_last: bool = documented(False, help="NHWC memory format.")

    def validate(self) -> "FinetuneRecipe":
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
        if self.patience is not None and self.patience < 1:
            raise UserError(f"--patience must be at least 1, got {self.patience}")
        if self.batchnorm_momentum is not None and not 0 < self.batchnorm_momentum <= 1:
            raise UserError(f"batchnorm_momentum must be in (0, 1], got {self.batchnorm_momentum}")
        if self.balance not in BALANCE_CHOICES:
            raise UserError(f"--balance must be one of {', '.join(BALANCE_CHOICES)}, got '{self.balance}'")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """How this process runs a task: never what it computes on the CPU. A resumed run takes today's.

    The fields with ``runtime`` metadata are kept in config.json's recipe (what the run was started
    with); ``out``, ``name``, ``resume`` and ``force`` only say which run folder and what to do with it.
    """

    device: str = _runtime("auto")
    compile: bool = _runtime(False, help="torch.compile the model.")
    grad_checkpointing: bool = _runtime(
        False, help="Recompute each block's activations in backward: lower peak memory, slower steps."
    )
    workers: int = dataclasses.field(default_factory=lambda: min(8, os.cpu_count() or 1),
                                     metadata={"shown_default": "min(8, CPUs)", "runtime": True})
    cache: bool = _runtime(False, help="Use (and fill) the resized-image cache.")
    cache_dir: Optional[str] = _runtime(None)
    out: Optional[str] = None  # the run directory; default runs/<dataset>/<model>/<name or seed<seed>>
    name: Optional[str] = None
    resume: bool = False
    force: bool = False

    def validate(self) -> "RunOptions":
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be 0 or more, got {self.workers}")
        if self.device not in DEVICE_CHOICES and not str(self.device).startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        return self

    def stored(self) -> dict[str, Any]:
        """The runtime fields, as config.json's recipe keeps them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("runtime")}


def runtime_fields(*groups: type) -> frozenset[str]:
    """The fields of ``groups`` marked ``runtime`` (how a run ran, not what it computed)."""
    return frozenset(f.name for group in groups for f in dataclasses.fields(group) if f.metadata.get("runtime"))


# How a fine-tuning run ran, not what it computed: a resume takes today's values, the sweep and the
# report's seed groups set them aside when comparing recipes. The split itself is compared by its
# sha256 (resume, evaluate), so its path is set aside too.
RUNTIME_FIELDS: frozenset[str] = runtime_fields(DataSpec, RunOptions) | {"split"}
# Recipe fields a resumed run may change: how long it trains.
RESUMABLE_FIELDS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(FinetuneRecipe) if f.metadata.get("resumable"))


@dataclass(frozen=True)
class FinetuneConfig(RunOptions, FinetuneRecipe, DataSpec):
    """The three groups of a fine-tuning run as one flat value, for a single library call:
    ``finetune(FinetuneConfig(dataset="ham10000", model="convnext_tiny"))``. :attr:`data`,
    :attr:`recipe` and :attr:`options` give the groups; :meth:`to_dict` is the recipe as
    config.json and checkpoints store it (data, recipe and the runtime options)."""

    @classmethod
    def of(cls, recipe: FinetuneRecipe, data: DataSpec = DataSpec(), options: Optional[RunOptions] = None
           ) -> "FinetuneConfig":
        options = options if options is not None else RunOptions()
        parts = {**_values(data, DataSpec), **_values(recipe, FinetuneRecipe), **_values(options, RunOptions)}
        return cls(**parts)

    @property
    def data(self) -> DataSpec:
        return DataSpec(**_values(self, DataSpec))

    @property
    def recipe(self) -> FinetuneRecipe:
        return FinetuneRecipe(**_values(self, FinetuneRecipe))

    @property
    def options(self) -> RunOptions:
        return RunOptions(**_values(self, RunOptions))

    def validate(self) -> "FinetuneConfig":
        self.recipe.validate()
        self.options.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELD_NAMES}


def _values(obj: Any, group: type) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(group)}


# The stored recipe's keys (config.json's ``recipe``, last.pt's ``config``), and a recipe file's.
FIELD_NAMES = tuple(f.name for f in dataclasses.fields(FinetuneConfig)
                    if f.name in {g.name for g in dataclasses.fields(DataSpec) + dataclasses.fields(FinetuneRecipe)}
                    or f.metadata.get("runtime"))

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
    :data:`DEFAULTS_BEFORE_KEY`. Unknown keys (from a newer version) are ignored. The one place
    that knows the defaults of older runs: every reader of a stored recipe comes here.
    """
    values = {k: stored[k] for k in FIELD_NAMES if k in stored}
    if "ema_decay" not in stored:
        values = {**DEFAULTS_BEFORE_KEY, **values}
    return FinetuneConfig(**values)


def resumed_recipe(stored: FinetuneRecipe, wanted: FinetuneRecipe) -> FinetuneRecipe:
    """The recipe a resumed run continues with: ``stored``, with ``wanted``'s epochs and patience.

    Any other difference is refused: the run would not be the run it was started as.
    """
    changed = [f.name for f in dataclasses.fields(FinetuneRecipe) if getattr(wanted, f.name) != getattr(stored, f.name)]
    forbidden = [name for name in changed if name not in RESUMABLE_FIELDS]
    if forbidden:
        described = ", ".join(f"{k}={getattr(stored, k)!r} (now {getattr(wanted, k)!r})" for k in forbidden)
        raise UserError(f"cannot resume with a different recipe: the run has {described}; drop those options "
                        "or pass --force to start again")
    return dataclasses.replace(stored, **{name: getattr(wanted, name) for name in changed}).validate()
