"""The sweep plan: a TOML file naming the grid (data sets x models x seeds) and one shared recipe.

```toml
datasets = ["ham10000", "busi"]      # split files: splits/<name>.csv, or the [splits] table
models   = ["accvit_tiny", "swin_t"]
seeds    = [0, 1, 2]
folds    = 5                         # optional: splits/<name>-5fold/cv.json; runs .../fold<k>-seed<seed>/
out      = "runs"                    # runs/<dataset>/<model>/seed<seed>/
[recipe]                             # any finetune recipe key, for every run
epochs = 100
[recipe.busi]                        # per data set overrides
balance = "weights"
[splits]                             # optional: another split file per data set
busi = "splits/busi_v2.csv"          # or a cross-validation: "splits/busi-5fold/cv.json"
[slurm]                              # only read by --launcher slurm
partition = "gpu"
gpus_per_run = 1
```
Every run is an ordinary ``accvit-med finetune`` run, started as a subprocess with the recipe in a
JSON file the sweep writes under ``<out>/.sweep/recipes/``. The whole plan is checked (keys,
values, models, weights, split files) before anything is written or started.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from accvit_med.errors import UserError
from accvit_med.rundir.layout import default_run_path
from accvit_med.training.recipe import FIELD_NAMES, FinetuneConfig
from accvit_med.training.recipe_file import resolve_config

PLAN_KEYS = ("datasets", "models", "seeds", "folds", "out", "recipe", "splits", "slurm")
# The grid sets these for each run; a recipe that set them too would contradict the grid.
GRID_FIELDS = ("dataset", "split", "model", "seed")
RECIPE_KEYS = tuple(name for name in FIELD_NAMES if name not in GRID_FIELDS)
SWEEP_DIR = ".sweep"  # under out: the recipe files and SLURM's submission folder


@dataclass(frozen=True)
class SlurmSettings:
    """Per-run resources of ``--launcher slurm`` (the plan's ``[slurm]`` table)."""

    partition: Optional[str] = None
    gpus_per_run: int = 1  # > 1: the run is started under torchrun on one node
    cpus_per_gpu: int = 8
    cpus_per_run: int = 4  # used when gpus_per_run = 0 (a CPU run)
    time: str = "24:00:00"  # [days-]hours:minutes:seconds, as sbatch takes it
    mem: Optional[str] = None  # e.g. "64G"
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    setup: tuple[str, ...] = ()  # shell lines run before the job (e.g. module load cuda)

    @property
    def cpus(self) -> int:
        return self.cpus_per_run if self.gpus_per_run == 0 else self.cpus_per_gpu * self.gpus_per_run

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: where it lives and the recipe it must have."""

    dataset: str
    model: str
    seed: int
    run_dir: Path
    recipe_file: Path  # the data set's (or fold's) recipe (model and seed come on the command line)
    config: FinetuneConfig  # the full recipe, as finetune will resolve it
    fold: Optional[int] = None  # the fold of the data set's cross-validation (1-based); None: one split

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.model}/{run_name(self.seed, self.fold)}"

    def command(self, resume: bool = False, force: bool = False, gpus: int = 1) -> list[str]:
        """The exact finetune command line (under torchrun when the run spans several GPUs)."""
        launcher = [sys.executable, "-m", "accvit_med"]
        if gpus > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={gpus}", "-m", "accvit_med"]
        command = [*launcher, "finetune", "--config", str(self.recipe_file), "--model", self.model,
                   "--seed", str(self.seed), "--out", str(self.run_dir)]
        if resume:
            command.append("--resume")
        if force:
            command.append("--force")
        return command


@dataclass
class SweepPlan:
    path: Path
    out: Path
    datasets: list[str]
    models: list[str]
    seeds: list[int]
    recipes: dict[str, dict[str, Any]]  # data set -> the recipe file's contents
    slurm: SlurmSettings
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def sweep_dir(self) -> Path:
        return self.out / SWEEP_DIR


def run_name(seed: int, fold: Optional[int] = None) -> str:
    """A run's folder name in the grid: seed<S>, or fold<k>-seed<S> for a fold of a cross-validation."""
    return f"seed{seed}" if fold is None else f"fold{fold}-seed{seed}"


def time_minutes(text: str) -> int:
    """sbatch's time formats ([D-]HH:MM:SS, HH:MM:SS, MM:SS, MM) in minutes, rounded up."""
    days, _, clock = str(text).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise ValueError(text)
    if len(parts) == 1:
        seconds = parts[0] * 60
    elif len(parts) == 2:
        seconds = parts[0] * 60 + parts[1]
    else:
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    seconds += int(days or 0) * 86400
    return max(1, -(-seconds // 60))


def _list(plan: Path, data: dict, key: str, kind: type) -> list:
    values = data.get(key)
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in values)):
        example = {"datasets": '["ham10000"]', "models": '["accvit_tiny"]', "seeds": "[0, 1, 2]"}[key]
        raise UserError(f"plan '{plan}' needs {key} = a non-empty list of {kind.__name__}s, e.g. {key} = {example}")
    if len(set(values)) != len(values):
        raise UserError(f"plan '{plan}' lists the same entry twice in {key}; list each once")
    return values


def _recipe_table(plan: Path, table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UserError(f"plan '{plan}': {where} must be a table of recipe keys, e.g. epochs = 100")
    table = {str(k).replace("-", "_"): v for k, v in table.items()}
    for key in table:
        if key in GRID_FIELDS:
            raise UserError(f"plan '{plan}': {where} sets '{key}', which the grid sets for each run; "
                            "use datasets/models/seeds (or [splits]) instead")
        if key not in RECIPE_KEYS:
            raise UserError(f"plan '{plan}': {where} has unknown recipe key '{key}'; "
                            f"known keys: {', '.join(RECIPE_KEYS)}")
    return table


def _slurm_settings(plan: Path, table: Any) -> SlurmSettings:
    if table is None:
        return SlurmSettings()
    if not isinstance(table, dict):
        raise UserError(f"plan '{plan}': [slurm] must be a table, e.g. partition = \"gpu\"")
    known = {f: SlurmSettings.__dataclass_fields__[f] for f in SlurmSettings.__dataclass_fields__}
    values = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise UserError(f"plan '{plan}': [slurm] has unknown key '{key}'; known keys: {', '.join(known)}")
        if name in ("gpus_per_run", "cpus_per_gpu", "cpus_per_run"):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "gpus_per_run" else 1):
                raise UserError(f"plan '{plan}': [slurm] {name} must be a whole number "
                                f"({'0 or more' if name == 'gpus_per_run' else 'at least 1'}), got {value!r}")
        elif name == "setup":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"plan '{plan}': [slurm] setup must be a list of shell lines, "
                                "e.g. [\"module load cuda\"]")
            value = tuple(value)
        elif not isinstance(value, str):
            raise UserError(f"plan '{plan}': [slurm] {name} must be a string, got {value!r}")
        values[name] = value
    settings = SlurmSettings(**values)
    try:
        settings.minutes
    except ValueError:
        raise UserError(f"plan '{plan}': [slurm] time '{settings.time}' is not a SLURM time; "
                        "write HH:MM:SS or D-HH:MM:SS, e.g. time = \"12:00:00\"") from None
    return settings


def load_plan(path: str | os.PathLike) -> SweepPlan:
    """Read and check a plan (UserError on the first problem); nothing is written."""
    import tomllib

    plan_path = Path(path)
    if not plan_path.is_file():
        raise UserError(f"plan '{plan_path}' does not exist; pass a TOML file (see docs/sweep.md)")
    try:
        data = tomllib.loads(plan_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"plan '{plan_path}' is not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(PLAN_KEYS))
    if unknown:
        raise UserError(f"plan '{plan_path}' has unknown key(s) {', '.join(unknown)}; "
                        f"known keys: {', '.join(PLAN_KEYS)}")
    datasets = _list(plan_path, data, "datasets", str)
    models = _list(plan_path, data, "models", str)
    seeds = _list(plan_path, data, "seeds", int)
    out = data.get("out", "runs")
    if not isinstance(out, str) or not out:
        raise UserError(f"plan '{plan_path}': out must be a folder name, e.g. out = \"runs\"")
    out_dir = Path(out).resolve()

    recipe = dict(data.get("recipe", {}))
    overrides = {name: recipe.pop(name) for name in list(recipe) if isinstance(recipe[name], dict)}
    shared = _recipe_table(plan_path, recipe, "[recipe]")
    for name in overrides:
        if name not in datasets:
            raise UserError(f"plan '{plan_path}' has [recipe.{name}] but '{name}' is not in datasets; "
                            "add it to datasets or remove the table")
    splits = data.get("splits", {})
    if not isinstance(splits, dict) or not all(isinstance(v, str) for v in splits.values()):
        raise UserError(f"plan '{plan_path}': [splits] must map data set names to split files, "
                        "e.g. busi = \"splits/busi.csv\"")
    for name in splits:
        if name not in datasets:
            raise UserError(f"plan '{plan_path}': [splits] names '{name}', which is not in datasets; "
                            "add it or remove the line")
    slurm = _slurm_settings(plan_path, data.get("slurm"))

    folds = data.get("folds")
    if folds is not None and (not isinstance(folds, int) or isinstance(folds, bool) or folds < 2):
        raise UserError(f"plan '{plan_path}': folds must be a whole number of at least 2 (the K of the data sets' "
                        f"K-fold cross-validation), got {folds!r}")

    plan = SweepPlan(plan_path, out_dir, datasets, models, seeds, {}, slurm)
    for dataset in datasets:
        table = {**shared, **_recipe_table(plan_path, overrides.get(dataset, {}), f"[recipe.{dataset}]")}
        for fold, split in _dataset_splits(plan_path, dataset, splits.get(dataset), folds):
            _check_split(plan_path, split, dataset)
            # Absolute paths: a SLURM job may start in another folder than the one the plan was read in.
            file_recipe = {**table, "dataset": dataset, "split": str(split.resolve())}
            for key in ("data_dir", "cache_dir", "weights"):
                value = table.get(key)
                if isinstance(value, str) and value and not (key == "weights" and value in ("imagenet", "none")):
                    file_recipe[key] = str(Path(value).resolve())
            key = dataset if fold is None else f"{dataset}-fold{fold}"
            plan.recipes[key] = file_recipe
            recipe_file = plan.sweep_dir / "recipes" / f"{key}.json"
            for model in models:
                for seed in seeds:
                    config = _checked_config(plan_path, dataset, {**file_recipe, "model": model, "seed": seed})
                    run_dir = default_run_path(dataset, model, seed, name=run_name(seed, fold), root=out_dir)
                    plan.runs.append(PlannedRun(dataset, model, seed, run_dir, recipe_file, config, fold))
    return plan


def _dataset_splits(plan: Path, dataset: str, named: Optional[str],
                    folds: Optional[int]) -> list[tuple[Optional[int], Path]]:
    """(fold, split file) of a data set: [(None, its split)], or one per fold of its cross-validation
    (``[splits]`` naming a cv.json, or ``folds = K`` and splits/<dataset>-<K>fold/cv.json)."""
    from accvit_med.datasets.folds import CV_MANIFEST, default_cv_dir, read_cv

    if named is not None and named.endswith(".json"):
        cv_path = Path(named)
    elif folds is not None:
        if named is not None:
            raise UserError(f"plan '{plan}': folds = {folds} needs a cross-validation of '{dataset}', but [splits] "
                            f"names the split file '{named}'; name its cv.json (accvit-med split --folds {folds})")
        cv_path = default_cv_dir(dataset, folds) / CV_MANIFEST
    else:
        split = Path(named) if named is not None else Path("splits") / f"{dataset}.csv"
        if not split.is_file():
            raise UserError(f"plan '{plan}': split file '{split}' for data set '{dataset}' does not exist; "
                            f"run accvit-med split --dataset {dataset} first, or name the file in [splits]")
        return [(None, split)]
    if not cv_path.is_file():
        k = folds or "K"
        raise UserError(f"plan '{plan}': cross-validation '{cv_path}' for data set '{dataset}' does not exist; "
                        f"run accvit-med split --dataset {dataset} --folds {k} first, or name its cv.json in [splits]")
    try:
        cv = read_cv(cv_path)
    except UserError as err:
        raise UserError(f"plan '{plan}': {err}") from None
    if folds is not None and int(cv["k"]) != folds:
        raise UserError(f"plan '{plan}': '{cv_path}' is a {cv['k']}-fold cross-validation, but the plan says "
                        f"folds = {folds}; make them agree")
    return [(int(entry["fold"]), cv_path.parent / entry["split"]) for entry in cv["folds"]]


def _check_split(plan: Path, split: Path, dataset: str) -> None:
    from accvit_med.datasets.splits import read_split

    try:
        recorded = read_split(split).manifest.get("dataset")
    except UserError as err:
        raise UserError(f"plan '{plan}': {err}") from None
    if recorded and recorded != dataset:
        raise UserError(f"plan '{plan}': split '{split}' was made for data set '{recorded}', not '{dataset}'; "
                        "name the right file in [splits]")


def _checked_config(plan: Path, dataset: str, values: dict) -> FinetuneConfig:
    """The run's full recipe, with finetune's own checks (values, model, weights, input size)."""
    from accvit_med.training.model_choice import check_model_choice

    where = f"plan '{plan}' ({dataset}/{values['model']})"
    try:
        config = resolve_config(values)
        check_model_choice(config)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    return config
