"""Which split a run trains on: ``--split FILE``, or the one ``accvit-med split`` wrote by default."""

from __future__ import annotations

from pathlib import Path

from accvit_med.datasets.splits import Split, default_split_path, read_split
from accvit_med.errors import UserError
from accvit_med.training.recipe import FinetuneConfig


def run_split_path(config: FinetuneConfig) -> Path:
    if config.split:
        return Path(config.split)
    if not config.dataset:
        raise UserError("no data given: pass --dataset NAME (uses splits/NAME.csv) or --split FILE")
    path = default_split_path(config.dataset)
    if not path.is_file():
        raise UserError(
            f"no split for dataset '{config.dataset}' at '{path}'; run accvit-med split --dataset "
            f"{config.dataset} first, or pass --split FILE"
        )
    return path


def load_run_split(config: FinetuneConfig) -> Split:
    """The split (with ``--data-dir`` as its root when given); checks it names the same dataset."""
    split = read_split(run_split_path(config), root=config.data_dir)
    recorded = split.manifest.get("dataset")
    if config.dataset and recorded and recorded != config.dataset:
        raise UserError(
            f"split '{split.csv_path}' was made for dataset '{recorded}', not '{config.dataset}'; "
            "pass the matching --dataset or --split"
        )
    return split
