"""A run's config.json and history.csv as typed values: :class:`RunRecord` and :class:`EpochRow`.

Every reader of a run (evaluate, predict, gradcam, report, sweep, resume) gets them from
:meth:`accvit_med.rundir.layout.RunDir.record` and :meth:`~accvit_med.rundir.layout.RunDir.history`
and no longer looks keys up in the JSON itself. The recipe is typed as the task's recipe class:
a fine-tuning run's through :func:`accvit_med.training.recipe.stored_recipe`, the one place that
knows the defaults older runs were started with. :meth:`RunRecord.to_dict` writes the same keys
config.json has always had, so old run folders load and new ones read as before.

Torch-free: the sweep reads run folders through this module.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from accvit_med.errors import UserError

TASKS = ("finetune", "pretrain")


@dataclass(frozen=True)
class SplitRef:
    """The split a fine-tuning run trained on: the path as given, the absolute path, the file's sha256."""

    path: str
    absolute_path: str
    sha256: str

    def existing(self) -> Optional[Path]:
        """The split file, found by the path as given (same folder) or the absolute one (anywhere)."""
        return next((p for p in (Path(self.path), Path(self.absolute_path)) if p.is_file()), None)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "absolute_path": self.absolute_path, "sha256": self.sha256}


@dataclass(frozen=True)
class RunRecord:
    """What config.json says about a run.

    Args:
        task: ``finetune`` or ``pretrain``.
        recipe: a :class:`~accvit_med.training.recipe.FinetuneConfig` (data, recipe and the runtime
            options it was started with; older runs' missing keys filled with the defaults of their
            time) or a :class:`~accvit_med.training.pretrain.recipe.PretrainRecipe`. A record the
            report reads may describe bare predictions (model, dataset, classes, ordinal) and hold
            none; :meth:`accvit_med.rundir.layout.RunDir.record` with a ``kind`` requires one.
        model: the registry name (for a custom factory, the recipe's label).
        classes: class names in the model's output order.
        dataset, ordinal, split, data_root: what a fine-tuning run trained on.
        weights: the starting weights' provenance (``spec``, ``file``, ``sha256``, ``inheritance``).
        device, amp_dtype: where the run computed and its autocast dtype (None: float32).
        versions, command, resumed_by: the software, the command that started it, those that resumed it.
        distributed, model_factory: world size and per-process batch; the custom network's name.
        data_path, ema_decay_adjusted: pre-training's image folder and EMA decay after adjustment.
        dicom_window: the ``--dicom-window`` (center, width) the run read DICOM images with; written
            only when one was given (each file's own window otherwise).
    """

    task: str
    recipe: Any
    model: Optional[str]
    classes: Optional[tuple[str, ...]]
    dataset: Optional[str] = None
    ordinal: bool = False
    split: Optional[SplitRef] = None
    data_root: Optional[str] = None
    weights: Optional[Mapping[str, Any]] = None
    device: Optional[str] = None
    amp_dtype: Optional[str] = None
    versions: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    resumed_by: tuple[tuple[str, ...], ...] = ()
    distributed: Optional[Mapping[str, Any]] = None
    model_factory: Optional[str] = None
    data_path: Optional[str] = None
    ema_decay_adjusted: Optional[float] = None
    dicom_window: Optional[tuple[float, float]] = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "RunRecord":
        """Read a config.json dict (KeyError/TypeError/ValueError when it lacks what a run has)."""
        task = "pretrain" if config.get("task") == "pretrain" else "finetune"
        recipe: Any = None  # a folder of predictions described by hand may hold no recipe
        if "recipe" in config and task == "pretrain":
            from accvit_med.training.pretrain.recipe import PretrainRecipe

            recipe = PretrainRecipe(**config["recipe"])
        elif "recipe" in config:
            from accvit_med.training.recipe import stored_recipe

            recipe = stored_recipe(config["recipe"])
        split = config.get("split")
        return cls(
            task=task, recipe=recipe, model=None if config.get("model") is None else str(config["model"]),
            classes=None if config.get("classes") is None else tuple(str(c) for c in config["classes"]),
            dataset=config.get("dataset"), ordinal=bool(config.get("ordinal", False)),
            split=None if not split else SplitRef(str(split["path"]), str(split.get("absolute_path", split["path"])),
                                                  str(split["sha256"])),
            data_root=config.get("data_root"), weights=config.get("weights"), device=config.get("device"),
            amp_dtype=config.get("amp_dtype"), versions=dict(config.get("versions") or {}),
            command=tuple(config.get("command") or ()),
            resumed_by=tuple(tuple(c) for c in config.get("resumed_by") or ()),
            distributed=config.get("distributed"), model_factory=config.get("model_factory"),
            data_path=config.get("data_path"), ema_decay_adjusted=config.get("ema_decay_adjusted"),
            dicom_window=_window(config.get("dicom_window")),
        )

    def to_dict(self) -> dict[str, Any]:
        """config.json's content (the keys each task has always written)."""
        common = {"recipe": self.recipe.to_dict(), "model": self.model, "classes": list(self.classes or ())}
        if self.task == "pretrain":
            body = {"task": "pretrain", **common, "data_path": self.data_path, "weights": self.weights,
                    "distributed": self.distributed, "ema_decay_adjusted": self.ema_decay_adjusted}
        else:
            body = {**common, "dataset": self.dataset, "ordinal": self.ordinal,
                    "split": None if self.split is None else self.split.to_dict(), "data_root": self.data_root,
                    "weights": self.weights, "distributed": self.distributed, "model_factory": self.model_factory}
        body.update(device=self.device, amp_dtype=self.amp_dtype, versions=dict(self.versions),
                    command=list(self.command))
        if self.resumed_by:
            body["resumed_by"] = [list(c) for c in self.resumed_by]
        if self.dicom_window is not None:
            body["dicom_window"] = list(self.dicom_window)
        return body

    def resumed(self, previous: Optional["RunRecord"], command: Sequence[str]) -> "RunRecord":
        """This record of a resumed run: the command that started it (``previous``'s), and ``command`` added."""
        if previous is None:
            return self
        return dataclasses.replace(self, command=previous.command or tuple(command),
                                   resumed_by=(*previous.resumed_by, tuple(command)))

    def recipe_key(self) -> dict[str, Any]:
        """The recipe without the fields that only say how the run ran (see ``runtime`` metadata)."""
        from accvit_med.training.recipe import RUNTIME_FIELDS

        return {k: v for k, v in self.recipe.to_dict().items() if k not in RUNTIME_FIELDS}

    def seedless_recipe_key(self) -> str:
        """:meth:`recipe_key` without the seed, as canonical JSON: equal for runs that differ only in
        their seed (the repeats of one recipe that seed rows, fold rows and ensembles group)."""
        rest = {k: v for k, v in self.recipe_key().items() if k != "seed"}
        return json.dumps(rest, sort_keys=True, default=str)


@dataclass(frozen=True)
class EpochRow:
    """One line of history.csv: the epoch and every other column as a float (None when empty)."""

    epoch: int
    values: Mapping[str, Optional[float]]

    def get(self, column: str) -> Optional[float]:
        return self.values.get(column)

    @property
    def val_loss(self) -> Optional[float]:
        return self.values.get("val_loss")

    @classmethod
    def from_csv(cls, row: Mapping[str, str]) -> "EpochRow":
        values = {k: (None if v in (None, "") else float(v)) for k, v in row.items() if k != "epoch"}
        return cls(int(float(row["epoch"])), values)


def read_history_file(path: Path) -> list[EpochRow]:
    """The rows of a history.csv ([] when there is none); a damaged file is the user's to fix."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return []
    try:
        return [EpochRow.from_csv(row) for row in rows]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"'{path}' is not a history.csv written by accvit-med; the run directory is damaged") from None


def best_val_loss(rows: Sequence[EpochRow]) -> Optional[float]:
    """The lowest finite validation loss of ``rows`` (None when there is none)."""
    losses = [r.val_loss for r in rows if r.val_loss is not None and math.isfinite(r.val_loss)]
    return min(losses) if losses else None


def _window(value: Optional[Sequence[float]]) -> Optional[tuple[float, float]]:
    return None if value is None else (float(value[0]), float(value[1]))
