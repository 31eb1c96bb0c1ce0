"""The run directory: where each file of a run lives, and the plain files read and written in one place.

```
runs/<dataset>/<model>/<name>/      (<name> defaults to seed<seed>; pretrain: runs/pretrain/<model>)
  config.json                       the resolved recipe, data, weights, versions, command line
  history.csv                       one row per completed epoch
  checkpoints/last.pt, best.pt      see accvit_med.rundir.checkpoints for their schema
  checkpoints/best_weights.safetensors   pretrain only: the weights that scored best.pt
  predictions_val.csv, predictions_test.csv, metrics.json     finetune only
  logs/                             written by `accvit-med sweep` (its output, job id, state)
  .accvit-med.json, .accvit-med.lock     ownership marker and lock (accvit_med.rundir.claim)
```
Every reader (``evaluate``, ``predict``, ``gradcam``, ``report``, ``sweep``, resume) goes through
:class:`RunDir`: its paths, :meth:`RunDir.record` (config.json as a typed
:class:`~accvit_med.rundir.record.RunRecord`) and :meth:`RunDir.history`; fine-tuning and
pre-training write it through :mod:`accvit_med.training.engine`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from accvit_med.rundir.record import EpochRow, RunRecord

RUN_FILES = ("config.json", "history.csv", "predictions_val.csv", "predictions_test.csv", "metrics.json")
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class RunDir:
    """A run's folder: where each of its files lives, and its config.json and history.csv read and written."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def history_file(self) -> Path:
        return self.path / "history.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def checkpoint(self, which: str) -> Path:
        """``best`` or ``last``: checkpoints/<which>.pt."""
        if which not in CHECKPOINTS:
            raise UserError(f"--checkpoint must be best or last, got '{which}'")
        return self.best if which == "best" else self.last

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def best_weights(self) -> Path:
        return self.checkpoints / "best_weights.safetensors"

    def predictions(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"

    def evaluate_dir(self, checkpoint: str) -> Path:
        """Where ``accvit-med evaluate`` writes by default: evaluate/<checkpoint>/."""
        return self.path / "evaluate" / checkpoint

    @property
    def gradcam_dir(self) -> Path:
        """Where ``accvit-med gradcam`` writes by default."""
        return self.path / "gradcam"

    @property
    def logs(self) -> Path:
        """``accvit-med sweep``'s folder in the run: the run's output and the sweep's marker."""
        return self.path / "logs"

    @property
    def sweep_marker(self) -> Path:
        return self.logs / "sweep.json"

    @property
    def log_file(self) -> Path:
        return self.logs / "finetune.log"

    def record(self, *, kind: Optional[str] = None) -> "RunRecord":
        """config.json as a :class:`~accvit_med.rundir.record.RunRecord` (UserError when it is
        missing, damaged, or of another ``kind`` than ``finetune``/``pretrain`` asked for)."""
        from accvit_med.rundir.record import RunRecord

        config = read_run_config(self.path, kind=kind)
        try:
            record = RunRecord.from_dict(config)
        except (KeyError, TypeError, ValueError):
            record = None
        incomplete = record is not None and (record.recipe is None or record.model is None or not record.classes)
        if record is None or (kind is not None and incomplete):
            raise UserError(f"'{self.config_file}' lacks what a run's config.json holds; the run directory is damaged")
        return record

    def record_if_any(self) -> Optional["RunRecord"]:
        """The record, or None for a folder without config.json (a bare predictions folder)."""
        return self.record() if self.config_file.is_file() else None

    def history(self) -> list["EpochRow"]:
        """history.csv's rows ([] before the first epoch or without the file)."""
        from accvit_med.rundir.record import read_history_file

        return read_history_file(self.history_file)

    def write_record(self, record: "RunRecord") -> None:
        atomic_write_json(self.config_file, record.to_dict())

    def write_history(self, rows: Sequence[dict], columns: Sequence[str]) -> None:
        """history.csv: one row per completed epoch, ``columns`` in order (a missing value is empty)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in columns})
        atomic_write_text(self.history_file, buffer.getvalue())


def default_run_path(dataset: str, model: str, seed: int, name: Optional[str] = None,
                     root: str | os.PathLike = "runs") -> Path:
    """runs/<dataset>/<model>/<name or seed<seed>>: where a fine-tuning run lives unless --out says."""
    return Path(root) / dataset / model / (name or f"seed{seed}")


def default_pretrain_path(model: str, root: str | os.PathLike = "runs") -> Path:
    """runs/pretrain/<model>: where a pre-training run lives unless --out says."""
    return Path(root) / "pretrain" / model


def run_kind(config: dict) -> str:
    """``finetune`` or ``pretrain``: the kind of run a config.json describes (pretrain writes ``task``)."""
    return "pretrain" if config.get("task") == "pretrain" else "finetune"


def read_run_config(path: str | os.PathLike, *, required: bool = True, kind: Optional[str] = None) -> dict:
    """A run's config.json as a dict; ``required=False`` gives {} for a folder without one.

    Args:
        path: the run directory.
        required: whether a missing folder or config.json is the user's mistake.
        kind: the kind of run the caller can use (``finetune``/``pretrain``); another is refused.
    """
    run = RunDir(Path(path))
    if not run.config_file.is_file():
        if not required:
            return {}
        if not run.path.is_dir():
            raise UserError(f"run directory '{run.path}' does not exist; pass a folder written by accvit-med finetune")
        raise UserError(f"'{run.path}' is not a run directory (no config.json); "
                        "pass a folder written by accvit-med finetune")
    try:
        config = json.loads(run.config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"'{run.config_file}' is not valid JSON; the run directory is damaged") from None
    if not isinstance(config, dict):
        raise UserError(f"'{run.config_file}' is not a JSON object; the run directory is damaged")
    if kind is not None and run_kind(config) != kind:
        raise UserError(f"'{run.path}' is a {run_kind(config)} run, not a {kind} run; "
                        + ("evaluate it with accvit-med pretrain --eval-only" if run_kind(config) == "pretrain"
                           else "pass a run written by accvit-med pretrain"))
    return config
