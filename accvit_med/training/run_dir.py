"""The run directory: where a fine-tuning run keeps everything a reviewer needs.

```
runs/<dataset>/<model>/<name>/      (<name> defaults to seed<seed>)
  config.json                       the resolved recipe, data, weights, versions, command line
  history.csv                       one row per completed epoch
  checkpoints/last.pt, best.pt      resumable state; best validation loss
  predictions_val.csv, predictions_test.csv, metrics.json
```
An existing run is never overwritten by accident: ``resume`` continues it, ``force`` starts again.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from accvit_med.errors import UserError

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

    def predictions(self, split: str) -> Path:
        return self.path / f"predictions_{split}.csv"


def default_run_path(dataset: str, model: str, seed: int, name: Optional[str] = None, root: str = "runs") -> Path:
    return Path(root) / dataset / model / (name or f"seed{seed}")


def _holds_files(path: Path) -> bool:
    # Empty folders (e.g. the skeleton of a run that failed before its first write) hold no work.
    return path.is_dir() and any(p.is_file() for p in path.rglob("*"))


def check_run_dir(path: str | os.PathLike, resume: bool, force: bool) -> bool:
    """Raise what :func:`prepare_run_dir` would refuse, touching nothing; True if a run is there."""
    run = RunDir(Path(path))
    if resume and force:
        raise UserError("--resume and --force contradict each other; pass one of them")
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"'{run.path}' is a file, not a run directory; choose another --out")
    exists = _holds_files(run.path)
    if resume:
        if not run.last.is_file():
            raise UserError(f"cannot resume: '{run.last}' does not exist; start the run without --resume")
        return True
    if exists and not force:
        raise UserError(f"run directory '{run.path}' already exists; pass --resume to continue it or --force to start again")
    if exists and not (run.config.is_file() or run.checkpoints.is_dir()):
        # --force deletes a previous run, never an unrelated folder that happens to be there.
        raise UserError(f"'{run.path}' is not an accvit-med run directory; choose another --out")
    return exists


def prepare_run_dir(path: str | os.PathLike, resume: bool, force: bool) -> RunDir:
    """Check what may be done with ``path`` and make it ready; never destroys work unasked."""
    run = RunDir(Path(path))
    exists = check_run_dir(path, resume, force)
    if resume:
        return run
    if exists:
        shutil.rmtree(run.path)  # --force, on a folder check_run_dir recognised as a run
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    return run
