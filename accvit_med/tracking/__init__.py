"""Experiment tracking, opt-in: a run's epochs and results sent to TensorBoard or MLflow as well.

A :class:`~accvit_med.tracking.base.Tracker` gets three calls from a training run:
``on_fit_start(record)`` (config.json's contents, once the run directory is written),
``on_epoch_end(row)`` (history.csv's row) and ``on_fit_end(metrics, artifacts)`` (test metrics and
the run's files). :func:`open_tracker` builds the one ``--track`` names, wrapped so that a
tracking failure is one warning line and never stops training.
"""

from accvit_med.tracking.base import (
    TRACK_CHOICES,
    TRACKED_FILES,
    NullTracker,
    SafeTracker,
    Tracker,
    check_track,
    open_tracker,
)

__all__ = ["TRACKED_FILES", "TRACK_CHOICES", "NullTracker", "SafeTracker", "Tracker", "check_track", "open_tracker"]
