"""What a fine-tuning call asks for: the run folder's path, and on resume the run's own recipe.

A resumed run is its stored data and recipe (``epochs`` and ``patience`` may grow) with today's
run options: :func:`requested_config` builds it for the command line (defaults < ``--config`` <
options, or stored < ``--config`` < options), :func:`resumed_config` for a library caller.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from accvit_med.errors import UserError
from accvit_med.rundir.layout import RunDir, default_run_path
from accvit_med.training.recipe import FinetuneConfig, resumed_recipe, stored_recipe
from accvit_med.training.recipe_file import resolve_given, resumed_values
from accvit_med.training.run_split import load_run_split


def resolve_run_path(config: FinetuneConfig, split_dataset: Optional[Callable[[], Optional[str]]] = None) -> Path:
    """``--out``, else runs/<dataset>/<model>/<name or seed<seed>>; the dataset may come from the split."""
    if config.out:
        return Path(config.out)
    dataset = config.dataset
    if not dataset:
        dataset = (split_dataset() if split_dataset else load_run_split(config).manifest.get("dataset")) or "custom"
    return default_run_path(dataset, config.model, config.seed, config.name)


def requested_config(given: Mapping[str, Any], config_file: Optional[str | Path] = None, **options: Any
                     ) -> FinetuneConfig:
    """The run a command line asks for: defaults < ``config_file`` < ``given``; with ``resume``, the
    run's stored data and recipe < ``config_file`` < ``given`` (the run options stay today's).

    Args:
        given: the recipe, data and runtime fields set on the command line (None = not given).
        config_file: a recipe file (``--config``).
        options: :class:`~accvit_med.training.recipe.RunOptions` fields (``out``, ``name``, ``resume``...).
    """
    values = resolve_given(given, config_file)
    config = replace(FinetuneConfig(**values), **options).validate()
    if config.resume:
        run = RunDir(resolve_run_path(config))
        try:
            record = run.record() if run.config_file.is_file() else None
        except UserError:  # a damaged config.json: resuming reads the checkpoint's recipe
            record = None
        if record is not None and record.task == "finetune":
            config = replace(resumed_values(record.recipe, values), **options).validate()
    return config


def resumed_config(run_dir: str | Path, **changes: Any) -> FinetuneConfig:
    """What to pass to :func:`finetune` to continue ``run_dir``: its stored data and recipe with
    ``changes`` (more ``epochs``, another ``device``...), today's run options, ``resume=True``."""
    stored = RunDir(Path(run_dir)).record(kind="finetune").recipe
    return replace(resumed_values(stored, resolve_given(changes)), out=str(run_dir), resume=True)


def continued_config(config: FinetuneConfig, stored: Mapping[str, Any]) -> FinetuneConfig:
    """The run a resume continues: ``stored`` (last.pt's recipe; a run started under older defaults
    keeps them) with ``config``'s epochs and patience (any other recipe change is refused), its
    split and dataset when given, its data folder and its run options."""
    start = stored_recipe(stored)
    recipe = resumed_recipe(start.recipe, config.recipe)
    given = {k: getattr(config, k) for k in ("split", "dataset") if getattr(config, k) is not None}
    data = replace(start.data, data_dir=config.data_dir, **given)
    return FinetuneConfig.of(recipe, data, config.options)
