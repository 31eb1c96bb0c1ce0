"""The tracker protocol, the choice of backend, and the guard that keeps training going."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

from accvit_med.errors import UserError

TRACK_CHOICES = ("tensorboard", "mlflow")
TRACK_ENV = "ACCVIT_MED_TRACK"  # finetune's --track, when a sweep starts the runs
EXPERIMENT_ENV = "ACCVIT_MED_MLFLOW_EXPERIMENT"
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
# The run's files a tracker receives at the end (MLflow keeps them as artifacts).
TRACKED_FILES = ("metrics.json", "config.json", "history.csv", "predictions_val.csv", "predictions_test.csv")


class Tracker(Protocol):
    def on_fit_start(self, record: dict) -> None: ...

    def on_epoch_end(self, row: dict) -> None: ...

    def on_fit_end(self, metrics: dict, artifacts: Sequence[Path]) -> None: ...


class NullTracker:
    """No tracking (no ``--track``, or a process other than rank 0)."""

    def on_fit_start(self, record: dict) -> None:
        pass

    def on_epoch_end(self, row: dict) -> None:
        pass

    def on_fit_end(self, metrics: dict, artifacts: Sequence[Path]) -> None:
        pass


class SafeTracker:
    """Forwards to ``inner``; its first failure is one warning line, after which it is switched off.

    Tracking must never fail a training run: a server that went down mid-run costs its metrics
    from then on, not the run.
    """

    def __init__(self, inner: Tracker, name: str, warn: Callable[[str], None]):
        self.inner: Optional[Tracker] = inner
        self.name = name
        self.warn = warn

    def _call(self, method: str, *args) -> None:
        if self.inner is None:
            return
        try:
            getattr(self.inner, method)(*args)
        except Exception as err:  # any backend error: the run goes on without tracking
            self.inner = None
            text = " ".join(str(err).split())[:200] or type(err).__name__
            self.warn(f"warning: --track {self.name} stopped ({type(err).__name__}: {text}); "
                      "training goes on without it")

    def on_fit_start(self, record: dict) -> None:
        self._call("on_fit_start", record)

    def on_epoch_end(self, row: dict) -> None:
        self._call("on_epoch_end", row)

    def on_fit_end(self, metrics: dict, artifacts: Sequence[Path]) -> None:
        self._call("on_fit_end", metrics, artifacts)


def check_track(track: Optional[str]) -> None:
    """UserError for an unknown backend or one whose package is missing (before training starts)."""
    if track is None:
        return
    if track not in TRACK_CHOICES:
        raise UserError(f"--track must be one of {', '.join(TRACK_CHOICES)}, got '{track}'")
    import importlib.util

    try:  # found, not imported: a sweep checks it without loading the package
        found = importlib.util.find_spec(INSTALL[track]) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        found = False
    if not found:
        raise UserError(f"--track {track} needs the {INSTALL[track]} package; pip install 'accvit-med[tracking]'")


def share_tracking(track: str, experiment: str) -> None:
    """Make every finetune run started from here (a sweep's, local or SLURM) track with ``track``,
    MLflow runs grouped in ``experiment`` unless the user named one."""
    check_track(track)
    os.environ[TRACK_ENV] = track
    os.environ.setdefault(EXPERIMENT_ENV, experiment)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def open_tracker(track: Optional[str], run_dir: str | os.PathLike, is_main: bool = True,
                 warn: Callable[[str], None] = _stderr) -> Tracker:
    """The tracker of ``--track`` for the run in ``run_dir`` (rank 0 only), guarded by :class:`SafeTracker`."""
    check_track(track)
    if track is None or not is_main:
        return NullTracker()
    if track == "tensorboard":
        from accvit_med.tracking.tensorboard_tracker import TensorBoardTracker

        inner: Tracker = TensorBoardTracker(Path(run_dir))
    else:
        from accvit_med.tracking.mlflow_tracker import MLflowTracker

        inner = MLflowTracker(Path(run_dir))
    return SafeTracker(inner, track, warn)


def flat_params(recipe: dict) -> dict[str, str]:
    """The recipe as ``{name: text}`` (None as "none"), the form hparams and MLflow params take."""
    return {k: "none" if v is None else str(v) for k, v in recipe.items() if not isinstance(v, (dict, list))}


def scalar_items(row: dict) -> dict[str, float]:
    """The numeric values of a row (history.csv's, or metrics.json's top level)."""
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
