"""A run's learning curves, as the report draws them."""

from __future__ import annotations

from pathlib import Path


def read_history(run_dir: str | None) -> dict[str, list[float]] | None:
    """A run's history.csv as columns (epoch, train/val loss and accuracy); None without one."""
    import csv

    if run_dir is None or not (Path(run_dir) / "history.csv").is_file():
        return None
    wanted = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
    with open(Path(run_dir) / "history.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not all(key in rows[0] for key in wanted):
        return None
    return {key: [float(row[key]) for row in rows] for key in wanted}
