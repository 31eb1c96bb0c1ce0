"""``accvit-med prepare``: decode and resize every image of a split once, into the image cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Dataset name; without --split uses splits/<name>.csv."),
    split: Optional[Path] = typer.Option(None, "--split", help="Split CSV written by `accvit-med split`."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data root (default: the one in the split's manifest)."),
    image_size: int = typer.Option(224, "--image-size", help="Size the run will train at."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Default: <data root>/.accvit-cache."),
    workers: int = typer.Option(min(8, os.cpu_count() or 1), "--workers", help="Decoding processes."),
) -> None:
    """Fill the resized-image cache for a split, so `finetune --cache` never decodes full-size images.

    Entries are keyed by file path, size, modification time and --image-size: a replaced image is
    decoded again. Pass the same --image-size and --cache-dir to finetune.
    """
    from accvit_med.datasets.cache import fill_cache
    from accvit_med.errors import UserError
    from accvit_med.training.recipe import FinetuneConfig
    from accvit_med.training.run_split import load_run_split

    if image_size < 1:
        raise UserError(f"--image-size must be at least 1, got {image_size}")
    config = FinetuneConfig(dataset=dataset, split=None if split is None else str(split),
                            data_dir=None if data_dir is None else str(data_dir))
    loaded = load_run_split(config)
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
