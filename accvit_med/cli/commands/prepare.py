"""``accvit-med prepare``: decode and resize every image of a split once, into the image cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from accvit_med.cli.options import CacheDirOpt, DataDirOpt, DatasetOpt, SplitOpt, WorkersOpt


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    data_dir: DataDirOpt = None,
    image_size: Annotated[int, typer.Option("--image-size", min=1, help="Size the run will train at.")] = 224,
    cache_dir: CacheDirOpt = None,
    workers: WorkersOpt = min(8, os.cpu_count() or 1),
) -> None:
    """Fill the resized-image cache for a split, so `finetune --cache` never decodes full-size images.

    Entries are keyed by file path, size, modification time and --image-size: a replaced image is
    decoded again. Pass the same --image-size and --cache-dir to finetune.
    """
    from accvit_med.datasets.cache import fill_cache
    from accvit_med.errors import UserError
    from accvit_med.training.run_split import resolve_split

    loaded = resolve_split(dataset, split, data_dir)
    root = Path(loaded.root)
    if not root.is_dir():
        raise UserError(f"data root '{root}' (from the split's manifest) does not exist; pass --data-dir")
    paths = loaded.frame["path"].tolist()
    from accvit_med.datasets.cache import default_cache_dir
    from accvit_med.fileio import check_writable

    check_writable(cache_dir if cache_dir is not None else default_cache_dir(root), "--cache-dir")
    from accvit_med.progress import progress_bar

    with progress_bar(transient=True) as progress:
        task = progress.add_task("caching", total=len(paths))
        made, folder = fill_cache(root, paths, image_size, cache_dir, workers, on_image=lambda: progress.advance(task))
    typer.echo(f"{made} image(s) cached, {len(paths) - made} already there, in {folder}")
