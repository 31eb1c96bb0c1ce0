"""Runs that differ only by seed, as one entry of the report: mean +- sd over the seeds.

Two runs of one data set belong to a seed group when their recipes (read through
:meth:`accvit_med.rundir.layout.RunDir.record`, older runs' defaults filled in) are equal once the
seed and the settings that only say how a run ran (``runtime`` fields: device, workers, cache, ...)
are set aside, and their seeds differ. A model with one run per recipe forms no group: the report shows
it as it always has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from accvit_med.errors import UserError
from accvit_med.rundir.layout import RunDir


@dataclass
class SeedGroup:
    label: str  # the row label: "model (n seeds)"
    model: str
    names: list[str]  # the scored runs' names (model@seedN), in seed order
    seeds: list[int]
    mean: dict  # metrics averaged over the seeds (per-class entries too)
    sd: dict  # sample standard deviation of the scalar metrics (ddof=1)


def run_seed(run_dir: Optional[str]) -> tuple[Optional[int], Optional[str]]:
    """The run's seed and a key of the rest of its recipe, from its record (None, None without)."""
    if run_dir is None:
        return None, None
    try:
        record = RunDir(Path(run_dir)).record_if_any()
    except (OSError, UserError):
        return None, None
    if record is None or record.task != "finetune" or record.recipe is None:
        return None, None
    return int(record.recipe.seed), record.seedless_recipe_key()


def _mean(values: Sequence[Any]) -> Any:
    if all(isinstance(v, dict) for v in values):
        return {k: _mean([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
    if all(v == values[0] for v in values):  # class names, counts, flags: the same in every seed
        return values[0]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return float(np.mean(values))
    if any(v is None for v in values):  # e.g. an AUC undefined in one seed: undefined on average
        return None
    if all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1 and \
            all(isinstance(x, (int, float)) for v in values for x in np.ravel(v)):
        return np.mean(np.asarray(values, dtype=float), axis=0).tolist()
    return values[0] if all(v == values[0] for v in values) else None


def _sd(values: Sequence[Any]) -> Optional[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) or len(values) < 2:
        return None
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def mean_metrics(metrics: Sequence[dict]) -> tuple[dict, dict]:
    """Averages (scalars, per-class dicts, confusion matrices) and sds of the scalar metrics."""
    mean = _mean(list(metrics))
    sd = {k: _sd([m[k] for m in metrics]) for k in metrics[0]
          if all(k in m for m in metrics) and _sd([m[k] for m in metrics]) is not None}
    return mean, sd


def find_groups(scored: Sequence) -> list[SeedGroup]:
    """Seed groups among one data set's scored runs (objects with .name, .run, .metrics)."""
    by_key: dict[tuple, list[tuple[int, Any]]] = {}
    for run in scored:
        seed, key = run_seed(run.run.run_dir)
        if seed is not None:
            by_key.setdefault((run.run.model, key), []).append((seed, run))
    groups = []
    for (model, _), members in by_key.items():
        seeds = [seed for seed, _ in members]
        if len(members) < 2 or len(set(seeds)) != len(seeds):
            continue
        members.sort(key=lambda item: item[0])
        mean, sd = mean_metrics([run.metrics for _, run in members])
        groups.append(SeedGroup(f"{model} ({len(members)} seeds)", model, [run.name for _, run in members],
                                [seed for seed, _ in members], mean, sd))
    return groups


def mean_sd_text(mean: Optional[float], sd: Optional[float], scale: float = 100, decimals: int = 2) -> str:
    """'85.07 ± 0.42' (percent), or '–' when undefined."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if sd is None:
        return f"{scale * mean:.{decimals}f}"
    return f"{scale * mean:.{decimals}f} ± {scale * sd:.{decimals}f}"
