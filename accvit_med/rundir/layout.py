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
``evaluate``, ``predict``, ``gradcam`` and ``report`` read a run through :func:`read_run_config`
and :class:`RunDir`; fine-tuning and pre-training write it through :mod:`accvit_med.training.engine`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, atomic_write_text

RUN_FILES = ("config.json", "history.csv", "predictions_val.csv", "predictions_test.csv", "metrics.json")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def history(self) -> Path:
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

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def best_weights(self) -> Path:
        return self.checkpoints / "best_weights.safetensors"

    def predictions(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"


def default_run_path(dataset: str, model: str, seed: int, name: Optional[str] = None, root: str = "runs") -> Path:
    return Path(root) / dataset / model / (name or f"seed{seed}")


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
    if not run.config.is_file():
        if not required:
            return {}
        if not run.path.is_dir():
            raise UserError(f"run directory '{run.path}' does not exist; pass a folder written by accvit-med finetune")
        raise UserError(f"'{run.path}' is not a run directory (no config.json); pass a folder written by accvit-med finetune")
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"'{run.config}' is not valid JSON; the run directory is damaged") from None
    if not isinstance(config, dict):
        raise UserError(f"'{run.config}' is not a JSON object; the run directory is damaged")
    if kind is not None and run_kind(config) != kind:
        raise UserError(f"'{run.path}' is a {run_kind(config)} run, not a {kind} run; "
                        + ("evaluate it with accvit-med pretrain --eval-only" if run_kind(config) == "pretrain"
                           else "pass a run written by accvit-med pretrain"))
    return config


def write_run_config(run: RunDir, config: dict) -> None:
    atomic_write_json(run.config, config)


def write_history(run: RunDir, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """history.csv: one row per completed epoch, ``columns`` in order (a missing value is empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in columns})
    atomic_write_text(run.history, buffer.getvalue())
