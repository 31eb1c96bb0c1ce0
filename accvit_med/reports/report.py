"""``write_report``: one folder of tables, figures and JSON from one or many runs.

Inputs are grouped by dataset; each dataset's runs must share one class set. Rows are sorted
by image path, so row order in the files does not matter, and runs on the same test images
share the same stratified bootstrap resamples: their confidence intervals and the paired
differences (ACC-ViT minus each baseline) come from one set of resamples. The folder is built
beside ``out_dir`` and moved into place at the end, so an interrupted report leaves the
previous one intact; the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from accvit_med import __version__
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json, atomic_write_text, check_writable
from accvit_med.ownership import check_replaceable, write_marker
from accvit_med.reports import figures, seeds, tables
from accvit_med.reports.bootstrap import (CI_LEVEL, DEFAULT_RESAMPLES, bootstrap_scores,
                                          paired_difference)
from accvit_med.reports.calibration import DEFAULT_BINS, reliability_bins
from accvit_med.reports.metrics import classification_metrics, confidence_intervals
from accvit_med.reports.runs import RunInput, resolve_input

# The paper's orders: Table 1 lists the baselines first, Tables 5-7 put ACC-ViT first.
_TABLE1_BASELINES = ("swin_t", "convnext_tiny", "maxvit_t")
_DETAIL_BASELINES = ("convnext_tiny", "swin_t", "maxvit_t")
_ACCVIT_SIZES = ("pico", "femto", "nano", "tiny", "small", "base")
_DATASET_ORDER = ("ham10000", "eyepacs", "busi")
COMPARED_METRICS = ("accuracy", "macro_f1", "macro_auc", "quadratic_weighted_kappa")


def is_accvit(model: str) -> bool:
    """Registry models by their family; other labels (e.g. "ACC-ViT-T" typed by hand) by their prefix."""
    from accvit_med.models.registry import known_family

    family = known_family(model)
    if family is not None:
        return family == "accvit"
    return model.lower().replace("-", "_").startswith(("accvit", "acc_vit"))


def _accvit_rank(model: str) -> int:
    size = model.lower().rsplit("_", 1)[-1]
    return _ACCVIT_SIZES.index(size) if size in _ACCVIT_SIZES else len(_ACCVIT_SIZES)


def _model_key(model: str, baselines: Sequence[str], accvit_first: bool) -> tuple:
    if is_accvit(model):
        return (0 if accvit_first else 2, _accvit_rank(model), model)
    if model in baselines:
        return (1 if accvit_first else 0, baselines.index(model), model)
    return (3, 0, model)


def _dataset_key(dataset: str) -> tuple:
    known = dataset.lower()
    return (0, _DATASET_ORDER.index(known), "") if known in _DATASET_ORDER else (1, 0, dataset)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


@dataclass
class ScoredRun:
    name: str  # the row label: the model, or model@run when a model appears twice
    run: RunInput
    metrics: dict
    group: str | None = None  # the seed group's label when the run is one of several seeds
    seed: int | None = None


@dataclass
class ReportResult:
    out_dir: Path
    datasets: dict[str, list[ScoredRun]]
    comparisons: list[dict]
    notes: list[str]
    files: list[str] = field(default_factory=list)
    seed_groups: dict[str, list[seeds.SeedGroup]] = field(default_factory=dict)


def write_report(
    inputs: Iterable[str | os.PathLike | RunInput],
    out_dir: str | os.PathLike,
    seed: int = 0,
    n_boot: int = DEFAULT_RESAMPLES,
    *,
    split: str = "test",
    dataset: str | None = None,
    model: str | None = None,
    ordinal: bool | None = None,
    paired: bool = True,
    reference: str | None = None,
    ece_bins: int = DEFAULT_BINS,
    progress: bool = False,
) -> ReportResult:
    """Score every input and write the report folder ``out_dir``; returns what was computed.

    ``dataset``/``model`` name bare inputs (``model`` only when there is one input); ``ordinal``
    True forces quadratic weighted kappa. ``reference`` is the model compared with every other
    run of its dataset (default: the ACC-ViT runs); ``paired=False`` skips the comparisons (and
    the check that runs share their test images).
    """
    inputs = list(inputs)
    if not inputs:
        raise UserError("no inputs; pass run directories or predictions CSV files")
    if model is not None and len(inputs) > 1:
        raise UserError("--model names a single input; label several inputs as MODEL=PATH")
    if n_boot < 0:
        raise UserError(f"--n-boot is {n_boot}; pass 0 (no intervals) or more resamples, e.g. 1000")
    if ece_bins < 1:
        raise UserError(f"--ece-bins is {ece_bins}; pass a positive number of bins, e.g. 15")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    runs = [x if isinstance(x, RunInput) else resolve_input(x, split, dataset, model, ordinal)
            for x in inputs]

    notes: list[str] = []
    datasets: dict[str, list[ScoredRun]] = {}
    comparisons: list[dict] = []
    seed_groups: dict[str, list[seeds.SeedGroup]] = {}
    for name in sorted({run.dataset for run in runs}, key=_dataset_key):
        group = _prepare_dataset(name, [run for run in runs if run.dataset == name], paired)
        scored, distributions = _score_dataset(group, seed, n_boot, paired, ece_bins)
        datasets[name] = scored
        seed_groups[name] = _assign_seed_groups(scored)
        for run in scored:
            notes += [f"{name}/{run.name}: {note}" for note in run.metrics["notes"]]
        single = [c for c, s in scored[0].metrics["per_class"].items() if s["support"] == 1]
        if n_boot > 0 and single:
            # Resampling within a class of one image always redraws that image.
            notes.append(f"{name}: class(es) {', '.join(single)} have one test image each, which the "
                         "stratified bootstrap cannot vary: intervals are too narrow")
        if paired and n_boot > 0 and len(scored) > 1:
            found, dataset_notes = _compare(name, scored, distributions, reference)
            comparisons += found
            notes += dataset_notes
    if reference is not None and paired and n_boot > 0 and not comparisons:
        raise UserError(f"--reference '{reference}' matches no run that has another run on its "
                        "dataset; pass one of the report's model names")
    if not paired:
        notes.append("paired comparisons skipped (--no-paired)")
    elif n_boot == 0:
        notes.append("paired comparisons and confidence intervals skipped (no bootstrap resamples)")

    result = ReportResult(out_dir, datasets, comparisons, notes, seed_groups={k: v for k, v in seed_groups.items() if v})
    settings = {"seed": seed, "n_boot": n_boot, "split": split, "ece_bins": ece_bins}
    _write_folder(result, settings, progress)
    return result


def _assign_seed_groups(scored: list[ScoredRun]) -> list[seeds.SeedGroup]:
    groups = seeds.find_groups(scored)
    for group in groups:
        for run in scored:
            if run.name in group.names:
                run.group, run.seed = group.label, group.seeds[group.names.index(run.name)]
    return groups


REPORT_KIND = "report"


def _check_out_dir(out_dir: Path) -> None:
    resolved, cwd = out_dir.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        # The report replaces its folder as a whole, which the current folder cannot be.
        raise UserError(f"--out '{out_dir}' is the current folder or one of its parents; pass a new folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out '{out_dir}' is a file; pass a folder for the report")
    check_writable(out_dir.parent if out_dir.exists() else out_dir)
    # The report replaces the folder: only one whose marker proves we wrote it, holding nothing else.
    check_replaceable(out_dir, REPORT_KIND)


def _prepare_dataset(name: str, group: list[RunInput], paired: bool) -> list[tuple[str, RunInput]]:
    """Check class sets, align class order, sort rows by path, name the rows, check pairing."""
    first = group[0]
    aligned = []
    for run in group:
        if set(run.classes) != set(first.classes):
            raise UserError(
                f"'{first.source}' and '{run.source}' are both in dataset '{name}' but have "
                f"different classes ({', '.join(first.classes)} vs {', '.join(run.classes)}); "
                "report them separately or label them DATASET/MODEL=PATH"
            )
        predictions = run.predictions.with_class_order(first.classes)
        predictions = predictions.take(np.argsort(predictions.paths, kind="stable"))
        aligned.append(replace(run, predictions=predictions))
    aligned.sort(key=lambda run: _model_key(run.model, _DETAIL_BASELINES, accvit_first=True))

    counts = Counter(run.model for run in aligned)
    named = []
    for run in aligned:
        suffix = run.run_name or Path(run.source).stem
        named.append((run.model if counts[run.model] == 1 else f"{run.model}@{suffix}", run))
    seen: dict[str, RunInput] = {}
    for label, run in named:
        if label in seen:
            raise UserError(f"'{seen[label].source}' and '{run.source}' would both be '{label}' in "
                            f"dataset '{name}'; label them MODEL=PATH with different names")
        seen[label] = run

    if paired and len(aligned) > 1:
        _check_same_rows(aligned)
    return named


def _check_same_rows(runs: list[RunInput]) -> None:
    reference = runs[0].predictions
    repeated = [p for p, c in Counter(reference.paths.tolist()).items() if c > 1]
    if repeated:
        raise UserError(f"'{runs[0].source}' lists '{repeated[0]}' more than once; paired "
                        "comparisons need one row per image (or pass --no-paired)")
    for run in runs[1:]:
        other = run.predictions
        if len(other) != len(reference) or not np.array_equal(other.paths, reference.paths):
            only = sorted(set(reference.paths.tolist()) ^ set(other.paths.tolist()))
            example = f", e.g. '{only[0]}' is in one only" if only else ""
            raise UserError(
                f"'{runs[0].source}' ({len(reference)} rows) and '{run.source}' ({len(other)} rows) "
                f"do not hold the same test images{example}; paired comparisons need one test set "
                "(or pass --no-paired)"
            )
        differs = np.flatnonzero(other.labels != reference.labels)
        if differs.size:
            path = reference.paths[differs[0]]
            raise UserError(f"'{runs[0].source}' and '{run.source}' disagree on the true label of "
                            f"'{path}'; they were scored against different ground truth")


def _score_dataset(group: list[tuple[str, RunInput]], seed: int, n_boot: int, paired: bool,
                   ece_bins: int) -> tuple[list[ScoredRun], list[dict[str, np.ndarray]]]:
    ordinal = any(run.ordinal for _, run in group)
    classes = list(group[0][1].classes)
    k = len(classes)
    distributions: list[dict[str, np.ndarray]] = [{} for _ in group]
    if n_boot > 0:
        if paired:
            # Same rows (checked), same seed: the runs share every resample.
            y_true = group[0][1].predictions.y_true
            distributions = bootstrap_scores(
                y_true, [(run.predictions.y_pred, run.predictions.probs) for _, run in group],
                k, n_boot, seed, ordinal)
        else:
            distributions = [
                bootstrap_scores(run.predictions.y_true, [(run.predictions.y_pred, run.predictions.probs)],
                                 k, n_boot, seed, ordinal)[0]
                for _, run in group
            ]
    scored = []
    for (name, run), distribution in zip(group, distributions):
        p = run.predictions
        metrics = classification_metrics(p.labels, p.preds, p.probs, classes, ordinal,
                                         ece_bins=ece_bins, warn=False)
        if n_boot > 0:
            metrics["ci"] = confidence_intervals(distribution)
            metrics.update(ci_level=CI_LEVEL, n_boot=n_boot, seed=seed)
        scored.append(ScoredRun(name, run, metrics))
    return scored, distributions


def _compare(dataset: str, scored: list[ScoredRun], distributions: list[dict[str, np.ndarray]],
             reference: str | None) -> tuple[list[dict], list[str]]:
    if reference is None:
        references = [i for i, run in enumerate(scored) if is_accvit(run.run.model)]
    else:
        references = [i for i, run in enumerate(scored) if reference in (run.name, run.run.model)]
    if not references:
        missing = "no ACC-ViT run" if reference is None else f"no run named '{reference}'"
        return [], [f"{dataset}: {missing}, so no paired comparisons (name one with --reference)"]
    comparisons = []
    for i in references:
        for j, other in enumerate(scored):
            if j in references:
                continue
            if scored[i].group and other.group and scored[i].seed != other.seed:
                continue  # seeds are paired: each seed's reference run against the same seed's baseline
            for metric in COMPARED_METRICS:
                if metric not in distributions[i]:
                    continue
                a, b = scored[i].metrics[metric], other.metrics[metric]
                estimate = None if a is None or b is None else a - b
                comparisons.append({
                    "dataset": dataset, "reference": scored[i].name, "baseline": other.name,
                    "metric": metric,
                    **paired_difference(distributions[i][metric], distributions[j][metric], estimate),
                })
    return comparisons, []


# ---- writing -------------------------------------------------------------------------------

_FIGURE_KINDS = ("confusion_counts", "confusion_normalized", "reliability", "roc")


def _write_folder(result: ReportResult, settings: dict, progress: bool) -> None:
    out_dir = result.out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a report is meant to be shared
        files = _write_contents(result, settings, staging, progress)
        # Top-level names only: what remove_owned may later find there and delete with the report.
        write_marker(staging, REPORT_KIND, {f.split("/")[0] for f in files})
        if out_dir.exists() and any(out_dir.iterdir()):
            check_replaceable(out_dir, REPORT_KIND)  # again: the folder may have changed meanwhile
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, retired / "report")
            os.replace(staging, out_dir)
            shutil.rmtree(retired)
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.files = files


def _write_table(folder: Path, stem: str, table: tables.Table, files: list[str],
                 csv_table: tables.Table | None = None) -> None:
    """``csv_table``: the CSV's own version (seed groups' per-seed rows added)."""
    for suffix, render in (("md", tables.to_markdown), ("csv", tables.to_csv), ("tex", tables.to_latex)):
        chosen = csv_table if suffix == "csv" and csv_table is not None else table
        atomic_write_text(folder / f"{stem}.{suffix}", render(chosen))
        files.append(f"{stem}.{suffix}")


def _entries(result: ReportResult, ds: str) -> list[tuple[str, str, dict, dict | None]]:
    """One data set's rows: (label, model, metrics, sd); a seed group is one row of means and sds."""
    groups = {group.label: group for group in result.seed_groups.get(ds, [])}
    entries, seen = [], set()
    for run in result.datasets[ds]:
        if run.group is None:
            entries.append((run.name, run.run.model, run.metrics, None))
        elif run.group not in seen:
            seen.add(run.group)
            group = groups[run.group]
            entries.append((group.label, group.model, group.mean, group.sd))
    return entries


def _seed_members(result: ReportResult, ds: str) -> list[ScoredRun]:
    return [run for run in result.datasets[ds] if run.group is not None]


def _table1(result: ReportResult, per_seed: bool) -> tables.Table:
    """Table 1 (seed groups as mean ± sd); ``per_seed`` adds each seed's own row after them."""
    display = {ds: {label: metrics for label, _, metrics, _ in _entries(result, ds)} for ds in result.datasets}
    models = {label: model for ds in result.datasets for label, model, _, _ in _entries(result, ds)}
    sds = {(ds, label): sd for ds in result.datasets for label, _, _, sd in _entries(result, ds) if sd is not None}
    names = [name for name, _ in sorted(models.items(), key=lambda item: (
        _model_key(item[1], _TABLE1_BASELINES, accvit_first=False), item[0]))]
    if per_seed:
        for ds in result.datasets:
            for run in _seed_members(result, ds):
                display[ds][run.name] = run.metrics
                if run.name not in names:
                    names.append(run.name)
    table = tables.table1(display, names)
    width = len(tables.TABLE1_METRICS)
    for label, cells in table.rows:
        for d, ds in enumerate(result.datasets):
            sd = sds.get((ds, label))
            if sd is not None:
                cells[d * width:(d + 1) * width] = [
                    seeds.mean_sd_text(display[ds][label][key], sd.get(key)) for _, key in tables.TABLE1_METRICS]
    if sds:
        table.caption += "; several seeds: mean ± sd over seeds"
    return table


def _figure_path(dataset: str, name: str, kind: str) -> str:
    return f"figures/{_file_name(dataset)}/{_file_name(name)}_{kind}.png"


def _write_contents(result: ReportResult, settings: dict, folder: Path, progress: bool) -> list[str]:
    files: list[str] = []
    # Seed groups appear as one row of means (per-class tables too); the CSVs add per-seed rows.
    results = {ds: {label: metrics for label, _, metrics, _ in _entries(result, ds)} for ds in result.datasets}
    table_1 = _table1(result, per_seed=False)
    _write_table(folder, "table1", table_1, files, _table1(result, per_seed=True))
    summary = _summary_table(result)
    _write_table(folder, "summary", summary, files, _summary_table(result, per_seed=True))
    detail: dict[str, list[tables.Table]] = {}
    for ds, runs in results.items():
        stem = _file_name(ds)
        detail[ds] = [tables.per_class_table(ds, runs), tables.clinical_table(ds, runs)]
        _write_table(folder, f"{stem}_per_class", detail[ds][0], files)
        _write_table(folder, f"{stem}_sensitivity_specificity_auc", detail[ds][1], files)
        paired = _paired_table(ds, [c for c in result.comparisons if c["dataset"] == ds],
                               settings["n_boot"])
        if paired is not None:
            detail[ds].append(paired)
            _write_table(folder, f"{stem}_paired", paired, files)

    for ds, runs in result.datasets.items():
        for run in runs:
            path = f"metrics/{_file_name(ds)}/{_file_name(run.name)}.json"
            atomic_write_json(folder / path, run.metrics)
            files.append(path)
    files += _write_figures(result, settings, folder, progress)

    inputs = [{"dataset": ds, "name": run.name, "model": run.run.model, "predictions": run.run.source,
               "sha256": run.run.sha256, "run_dir": run.run.run_dir}
              for ds, runs in result.datasets.items() for run in runs]
    atomic_write_json(folder / "report.json", {
        "tool": f"accvit-med {__version__}",
        "settings": {**settings, "ci_level": CI_LEVEL},
        "inputs": inputs,
        "datasets": {ds: {"classes": runs[0].metrics["classes"], "ordinal": runs[0].metrics["ordinal"],
                          "runs": {run.name: run.metrics for run in runs}}
                     for ds, runs in result.datasets.items()},
        "comparisons": result.comparisons,
        "seed_groups": {ds: [{"label": g.label, "model": g.model, "runs": g.names, "seeds": g.seeds,
                              "mean": g.mean, "sd": g.sd} for g in groups]
                        for ds, groups in result.seed_groups.items()},
        "notes": result.notes,
    })
    files.append("report.json")
    atomic_write_text(folder / "report.md", _markdown(result, settings, inputs, table_1, summary, detail))
    files.append("report.md")
    return sorted(files)


def _write_figures(result: ReportResult, settings: dict, folder: Path, progress: bool) -> list[str]:
    from accvit_med.progress import progress_bar

    written = []
    every_run = [(ds, run) for ds, runs in result.datasets.items() for run in runs]
    with progress_bar(progress, transient=True) as bar:
        task = bar.add_task("figures", total=len(every_run) + 1)
        for ds, run in every_run:
            p = run.run.predictions
            title = f"{run.name} on {ds}"
            cm = np.asarray(run.metrics["confusion_matrix"])
            auc = [run.metrics["per_class"][c]["auc"] for c in p.classes]
            drawn = {
                "confusion_counts": figures.confusion_figure(cm, p.classes, normalize=False, title=title),
                "confusion_normalized": figures.confusion_figure(cm, p.classes, normalize=True, title=title),
                "reliability": figures.reliability_figure(
                    reliability_bins(p.probs, p.y_true, settings["ece_bins"]), title),
                "roc": figures.roc_figure(p.probs, p.y_true, p.classes, auc, title),
            }
            for kind, figure in drawn.items():
                path = _figure_path(ds, run.name, kind)
                figures.save_png(figure, folder / path)
                written.append(path)
            bar.advance(task)
        names = []
        for runs in result.datasets.values():
            names += [run.name for run in runs if run.name not in names]
        cells = [[next(((np.asarray(r.metrics["confusion_matrix"]), r.run.classes)
                        for r in runs if r.name == name), None) for name in names]
                 for runs in result.datasets.values()]
        grid = figures.confusion_grid_figure(cells, list(result.datasets), names)
        figures.save_png(grid, folder / "figures/confusion_grid.png")
        written.append("figures/confusion_grid.png")
        bar.advance(task)
    return written + _write_curves(result, folder)


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


def _curves_path(dataset: str, name: str) -> str:
    return f"figures/{_file_name(dataset)}/{_file_name(name)}_curves.png"


def _overlay_path(dataset: str) -> str:
    return f"figures/{_file_name(dataset)}/curves_overlay.png"


def _write_curves(result: ReportResult, folder: Path) -> list[str]:
    """Each run's learning curves and one overlay per data set (runs with a history.csv only)."""
    written = []
    for ds, runs in result.datasets.items():
        histories = [(run.name, history) for run in runs
                     if (history := read_history(run.run.run_dir)) is not None]
        for name, history in histories:
            figures.save_png(figures.curves_figure(history, f"{name} on {ds}"), folder / _curves_path(ds, name))
            written.append(_curves_path(ds, name))
        if histories:
            figures.save_png(figures.curves_overlay_figure(histories, ds), folder / _overlay_path(ds))
            written.append(_overlay_path(ds))
    return written


def _ci_text(metrics: dict, key: str) -> str:
    interval = metrics.get("ci", {}).get(key, {})
    return tables.interval_text(metrics[key], interval.get("low"), interval.get("high"))


def _summary_table(result: ReportResult, per_seed: bool = False) -> tables.Table:
    """One row per run, a seed group's as mean ± sd; ``per_seed`` adds each seed's row after it."""
    caption = "Test-set summary (%; 95% stratified bootstrap intervals)"
    if result.seed_groups:
        caption = caption[:-1] + "; several seeds: mean ± sd over seeds, n = test images)"
    table = tables.Table(
        caption=caption,
        row_header="dataset / model",
        groups=[("", ["n", "Acc [95% CI]", "Macro-F1 [95% CI]", "Macro-AUC [95% CI]",
                      "Balanced acc", "QW kappa [95% CI]", "ECE"])],
    )

    def run_row(ds: str, name: str, m: dict) -> tuple[str, list]:
        return (f"{ds} / {name}", [
            m["n"], _ci_text(m, "accuracy"), _ci_text(m, "macro_f1"), _ci_text(m, "macro_auc"),
            100 * m["balanced_accuracy"],
            _ci_text(m, "quadratic_weighted_kappa") if m["ordinal"] else "–",
            "–" if m["ece"] is None else 100 * m["ece"],
        ])

    for ds in result.datasets:
        for label, _, m, sd in _entries(result, ds):
            if sd is None:
                table.rows.append(run_row(ds, label, m))
                continue
            text = lambda key: seeds.mean_sd_text(m.get(key), sd.get(key))  # noqa: E731
            table.rows.append((f"{ds} / {label}", [
                m["n"], text("accuracy"), text("macro_f1"), text("macro_auc"), text("balanced_accuracy"),
                text("quadratic_weighted_kappa") if m["ordinal"] else "–", text("ece"),
            ]))
            if per_seed:
                table.rows += [run_row(ds, run.name, run.metrics) for run in _seed_members(result, ds)
                               if run.group == label]
    return table


_METRIC_TITLES = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "macro_auc": "Macro-AUC",
                  "quadratic_weighted_kappa": "QW kappa"}


def _paired_table(dataset: str, comparisons: list[dict], n_boot: int) -> tables.Table | None:
    if not comparisons:
        return None
    metrics = [m for m in COMPARED_METRICS if any(c["metric"] == m for c in comparisons)]
    table = tables.Table(
        caption=f"Paired bootstrap differences on {dataset} (percentage points; * = 95% CI excludes 0)",
        row_header="comparison",
        groups=[(_METRIC_TITLES[m], ["difference [95% CI]", "p"]) for m in metrics],
    )
    pairs = list(dict.fromkeys((c["reference"], c["baseline"]) for c in comparisons))
    for reference, baseline in pairs:
        cells: list[tables.Cell] = []
        for metric in metrics:
            found = [c for c in comparisons
                     if (c["reference"], c["baseline"], c["metric"]) == (reference, baseline, metric)]
            if not found or found[0]["difference"] is None:
                cells += ["–", "–"]
                continue
            c = found[0]
            text = tables.interval_text(c["difference"], c["ci_low"], c["ci_high"])
            cells += [text + (" *" if c["significant"] else ""),
                      tables.p_value_text(c["p_value"], n_boot)]
        table.rows.append((f"{reference} − {baseline}", cells))
    return table


def _markdown(result: ReportResult, settings: dict, inputs: list[dict], table_1: tables.Table,
              summary: tables.Table, detail: dict[str, list[tables.Table]]) -> str:
    lines = [
        "# accvit-med report", "",
        f"Written by accvit-med {__version__} from the {settings['split']} predictions of "
        f"{len(inputs)} run(s). Confidence intervals: stratified bootstrap, {settings['n_boot']} "
        f"resamples, seed {settings['seed']}, {int(CI_LEVEL * 100)}% percentile intervals. "
        f"ECE with {settings['ece_bins']} equal-width bins.", "",
        "## Inputs", "",
        "| dataset | name | predictions | sha256 |", "|:--|:--|:--|:--|",
        *(f"| {i['dataset']} | {i['name']} | `{i['predictions']}` | `{i['sha256']}` |" for i in inputs),
        "", "## Table 1", "", tables.to_markdown(table_1), "## Summary", "", tables.to_markdown(summary),
    ]
    for ds, runs in result.datasets.items():
        lines += [f"## {ds}", ""]
        for table in detail[ds]:
            lines += [tables.to_markdown(table)]
        for run in runs:
            links = " · ".join(f"[{kind.replace('_', ' ')}]({_figure_path(ds, run.name, kind)})"
                               for kind in _FIGURE_KINDS)
            if read_history(run.run.run_dir) is not None:
                links += f" · [learning curves]({_curves_path(ds, run.name)})"
            lines.append(f"- {run.name}: {links}")
        lines.append("")
        for group in result.seed_groups.get(ds, []):
            lines.append(f"- {group.label}: mean ± sd over seeds {', '.join(map(str, group.seeds))} "
                         f"(runs {', '.join(group.names)}); paired comparisons pair runs of the same seed")
        if any(read_history(run.run.run_dir) is not None for run in runs):
            lines += ["", f"![learning curves of every run on {ds}]({_overlay_path(ds)})"]
        lines.append("")
    lines += ["## Confusion matrices", "", "![confusion matrices](figures/confusion_grid.png)", ""]
    lines += ["## Notes", ""] + ([f"- {note}" for note in result.notes] or ["- none"])
    return "\n".join(lines) + "\n"
