"""Data sets as published, read into one sample table, and the train/val/test split files.

>>> from accvit_med import datasets
>>> table = datasets.load("ham10000", "datasets/ham10000")   # path, label, group per image
>>> frame = datasets.splits.make_split(table, seed=42)        # + split column

Adapters: ``ham10000`` (incl. the ISIC 2018 Task 3 copy), ``eyepacs``, ``busi``, ``isic2019``
(an external test set for HAM10000 models), ``folder`` (one folder per class) and ``csv``
(``path,label[,group]`` + metadata columns).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from accvit_med.datasets import busi, csvdata, eyepacs, folder, ham10000, isic2019, splits
from accvit_med.datasets.base import SampleTable
from accvit_med.errors import UserError

_LOADERS: dict[str, Callable[[str | os.PathLike], SampleTable]] = {
    "ham10000": ham10000.load,
    "eyepacs": eyepacs.load,
    "busi": busi.load,
    "isic2019": isic2019.load,
    "folder": folder.load,
    "csv": csvdata.load,
}


def list_datasets() -> list[str]:
    """The names :func:`load` accepts."""
    return list(_LOADERS)


def default_data_dir(name: str) -> Path:
    """``datasets/<name>/`` relative to the working directory: where users unpack a download."""
    return Path("datasets") / name


def load(
    name: str, root: str | os.PathLike | None = None, dedupe: bool = False, progress: bool = False
) -> SampleTable:
    """Read data set ``name`` from ``root`` (default ``datasets/<name>/``) into a sample table.

    ``dedupe`` joins near-identical images (perceptual hash) into one group, so that copies of
    one picture cannot land in both train and test.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise UserError(f"unknown dataset '{name}'; use one of {', '.join(_LOADERS)}")
    table = loader(default_data_dir(name) if root is None else root)
    if dedupe:
        from accvit_med.datasets.audit import merge_groups, near_duplicates

        clusters = near_duplicates(table.root, list(table.frame["path"]), progress=progress)
        table = merge_groups(table, clusters, "near-duplicate images (perceptual hash)")
    return table


__all__ = ["SampleTable", "default_data_dir", "list_datasets", "load", "splits"]
