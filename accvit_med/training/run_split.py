"""Which split a run trains on: ``--split FILE``, or the one ``accvit-med split`` wrote by default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from accvit_med.datasets.splits import Split, default_split_path, read_split
from accvit_med.errors import UserError
from accvit_med.training.recipe import FinetuneConfig


def split_path(dataset: Optional[str], split: Optional[str | os.PathLike]) -> Path:
    """``split`` if given, else ``splits/<dataset>.csv`` (which must exist).

    Args:
        dataset: data set name (``--dataset``).
        split: split CSV (``--split``); wins over ``dataset``.
    """
    if split:
        return Path(split)
    if not dataset:
        raise UserError("no data given: pass --dataset NAME (uses splits/NAME.csv) or --split FILE")
    path = default_split_path(dataset)
    if not path.is_file():
        raise UserError(
            f"no split for dataset '{dataset}' at '{path}'; run accvit-med split --dataset "
            f"{dataset} first, or pass --split FILE"
        )
    return path


def resolve_split(
    dataset: Optional[str], split: Optional[str | os.PathLike] = None, data_dir: Optional[str | os.PathLike] = None
) -> Split:
    """The split (with ``data_dir`` as its root when given); checks it names the same dataset.

    Args:
        dataset: data set name (``--dataset``); without ``split`` its default split is read.
        split: split CSV (``--split``).
        data_dir: data root overriding the one the split's manifest records (``--data-dir``).
    """
    loaded = read_split(split_path(dataset, split), root=data_dir)
    recorded = loaded.manifest.get("dataset")
    if dataset and recorded and recorded != dataset:
        raise UserError(
            f"split '{loaded.csv_path}' was made for dataset '{recorded}', not '{dataset}'; "
            "pass the matching --dataset or --split"
        )
    return loaded


def load_run_split(config: FinetuneConfig) -> Split:
    """The split a fine-tuning recipe names (see :func:`resolve_split`)."""
    return resolve_split(config.dataset, config.split, config.data_dir)
