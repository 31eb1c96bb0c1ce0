"""``--track``'s handler of a fine-tuning run: the run's events handed to a :class:`Tracker`.

It is a :class:`~accvit_med.training.train_state.FinetuneCallback`, so tracking needs nothing of
the training loop but its events; the run calls it on rank 0 only.
"""

from __future__ import annotations

from typing import Optional

from accvit_med.rundir.layout import RunDir, read_run_config
from accvit_med.tracking.base import TRACKED_FILES, Tracker, check_track, open_tracker


class TrackingCallback:
    """Sends config.json, each history row and the test metrics (with the run's files) to ``track``."""

    def __init__(self, track: str):
        check_track(track)  # a bad name or a missing package stops the command before any work
        self.track = track
        self.run: Optional[RunDir] = None
        self.tracker: Optional[Tracker] = None

    def on_fit_start(self, run: RunDir) -> None:
        self.run = run
        self.tracker = open_tracker(self.track, run.path, True)
        self.tracker.on_fit_start(read_run_config(run.path))

    def on_epoch_end(self, row: dict, state) -> None:
        if self.tracker is not None:
            self.tracker.on_epoch_end(row)

    def on_fit_end(self, metrics: dict) -> None:
        if self.tracker is not None:
            self.tracker.on_fit_end(metrics, [self.run.path / name for name in TRACKED_FILES])
