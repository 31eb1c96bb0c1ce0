"""The report's own tables (Table 1, summary, paired differences) built from scored data sets.

Cells are text where the report shows intervals or mean ± sd; the same cell texts make the
Markdown/CSV/LaTeX tables and the CLI's summary, so the terminal and the files agree.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from accvit_med.reports import seeds, tables
from accvit_med.reports.bootstrap import BOOTSTRAP_NAMES
from accvit_med.reports.comparisons import COMPARED_METRICS, METRIC_TITLES, Comparison
from accvit_med.reports.ordering import TABLE1_BASELINES, model_key
from accvit_med.reports.scoring import DatasetScores, ScoredRun
from accvit_med.reports.settings import ReportSettings

HEADLINE_COLUMNS = ("n", "accuracy", "macro_f1", "macro_auc", "balanced_accuracy", "quadratic_weighted_kappa", "ece")
_WITH_INTERVAL = ("accuracy", "macro_f1", "macro_auc", "quadratic_weighted_kappa")


def entries(scores: DatasetScores) -> list[tuple[str, str, dict, dict | None]]:
    """One data set's rows: (label, model, metrics, sd); a seed group is one row of means and sds."""
    groups = {group.label: group for group in scores.seed_groups}
    rows, seen = [], set()
    for run in scores.runs:
        if run.group is None:
            rows.append((run.name, run.run.model, run.metrics, None))
        elif run.group not in seen:
            seen.add(run.group)
            group = groups[run.group]
            rows.append((group.label, group.model, group.mean, group.sd))
    return rows


def seed_members(scores: DatasetScores) -> list[ScoredRun]:
    return [run for run in scores.runs if run.group is not None]


def headline_cells(m: dict, sd: dict | None = None, decimals: int = 2) -> dict[str, str]:
    """The headline numbers of one row as text (%): intervals for a run, mean ± sd for a seed group."""
    if sd is not None:
        cells = {key: seeds.mean_sd_text(m.get(key), sd.get(key), decimals=decimals)
                 for key in HEADLINE_COLUMNS if key != "n"}
    else:
        # Accuracy is a proportion: its Wilson interval; the other scores: their bootstrap interval.
        intervals = {**m.get("ci", {}), **m.get("wilson", {})}
        cells = {key: tables.interval_text(m[key], intervals.get(key, {}).get("low"),
                                           intervals.get(key, {}).get("high"), decimals=decimals)
                 for key in _WITH_INTERVAL}
        cells["balanced_accuracy"] = f"{100 * m['balanced_accuracy']:.{decimals}f}"
        cells["ece"] = "–" if m["ece"] is None else f"{100 * m['ece']:.{decimals}f}"
    if not m["ordinal"]:
        cells["quadratic_weighted_kappa"] = "–"
    cells["n"] = str(m["n"])
    return cells


def fold_rows(scores: DatasetScores, label: str) -> list[tuple[str, dict]]:
    """(name, metrics) of each fold of the pooled cross-validation row ``label`` ([] for other rows)."""
    found = next((f for f in scores.fold_groups if f.label == label), None)
    return [] if found is None else list(zip(found.names, found.metrics))


def headline_rows(datasets: Mapping[str, DatasetScores], per_seed: bool,
                  decimals: int = 2) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(dataset, row label, cells) per summary row; ``per_seed`` adds each seed's row after its group
    and each fold's row after its cross-validation's."""
    for ds, scores in datasets.items():
        for label, _, m, sd in entries(scores):
            yield ds, label, headline_cells(m, sd, decimals)
            if sd is not None and per_seed:
                for run in seed_members(scores):
                    if run.group == label:
                        yield ds, run.name, headline_cells(run.metrics, None, decimals)
            if per_seed:
                for name, metrics in fold_rows(scores, label):
                    yield ds, name, headline_cells(metrics, None, decimals)


def interval_methods(settings: ReportSettings) -> str:
    """How the report's intervals were computed, in one sentence."""
    boot = ("no bootstrap intervals (--n-boot 0)" if settings.n_boot == 0 else
            f"{BOOTSTRAP_NAMES[settings.bootstrap]}, {settings.n_boot} resamples, seed {settings.seed}, "
            "2.5th and 97.5th percentiles")
    return ("95% intervals: accuracy, sensitivity, specificity, PPV and NPV: Wilson score interval; "
            f"macro-F1, macro-AUC, kappa and paired differences: {boot}.")


def summary_table(datasets: Mapping[str, DatasetScores], settings: ReportSettings,
                  per_seed: bool = False) -> tables.Table:
    """One row per run, a seed group's as mean ± sd; ``per_seed`` adds each seed's row after it."""
    boot = "bootstrap" if settings.n_boot == 0 else \
        f"{BOOTSTRAP_NAMES[settings.bootstrap]}, {settings.n_boot} resamples"
    caption = f"Test-set summary (%; Wilson: Wilson score interval; bootstrap: {boot})"
    if any(scores.seed_groups for scores in datasets.values()):
        caption = caption[:-1] + "; several seeds: mean ± sd over seeds, n = test images)"
    if any(scores.fold_groups for scores in datasets.values()):
        caption = caption[:-1] + "; k-fold CV: the pooled out-of-fold predictions, every image once)"
    table = tables.Table(
        caption=caption,
        row_header="dataset / model",
        groups=[("", ["n", "Acc [95% Wilson]", "Macro-F1 [95% bootstrap]", "Macro-AUC [95% bootstrap]",
                      "Balanced acc", "QW kappa [95% bootstrap]", "ECE"])],
    )
    for ds, label, cells in headline_rows(datasets, per_seed):
        table.rows.append((f"{ds} / {label}", [cells[key] for key in HEADLINE_COLUMNS]))
    return table


def table1(datasets: Mapping[str, DatasetScores], per_seed: bool) -> tables.Table:
    """Table 1 (seed groups as mean ± sd); ``per_seed`` adds each seed's own row after them."""
    rows = {ds: entries(scores) for ds, scores in datasets.items()}
    display = {ds: {label: metrics for label, _, metrics, _ in found} for ds, found in rows.items()}
    models = {label: model for found in rows.values() for label, model, _, _ in found}
    sds = {(ds, label): sd for ds, found in rows.items() for label, _, _, sd in found if sd is not None}
    for ds, scores in datasets.items():  # a cross-validation: mean ± sd over its folds
        for group in scores.fold_groups:
            display[ds][group.label], sds[(ds, group.label)] = group.mean, group.sd
    names = [name for name, _ in sorted(models.items(), key=lambda item: (
        model_key(item[1], TABLE1_BASELINES, accvit_first=False), item[0]))]
    if per_seed:
        for ds, scores in datasets.items():
            members = [(run.name, run.metrics) for run in seed_members(scores)]
            members += [pair for group in scores.fold_groups for pair in zip(group.names, group.metrics)]
            for name, metrics in members:
                display[ds][name] = metrics
                if name not in names:
                    names.append(name)
    table = tables.table1(display, names)
    width = len(tables.TABLE1_METRICS)
    for label, cells in table.rows:
        for d, ds in enumerate(datasets):
            sd = sds.get((ds, label))
            if sd is not None:
                cells[d * width:(d + 1) * width] = [
                    seeds.mean_sd_text(display[ds][label][key], sd.get(key)) for _, key in tables.TABLE1_METRICS]
    if any(scores.seed_groups for scores in datasets.values()):
        table.caption += "; several seeds: mean ± sd over seeds"
    if any(scores.fold_groups for scores in datasets.values()):
        table.caption += "; k-fold CV: mean ± sd over folds"
    return table


CV_METRICS = (("Acc", "accuracy"), ("Macro-F1", "macro_f1"), ("Macro-AUC", "macro_auc"),
              ("Balanced acc", "balanced_accuracy"), ("QW kappa", "quadratic_weighted_kappa"))


def cross_validation_table(datasets: Mapping[str, DatasetScores], per_fold: bool = False) -> tables.Table | None:
    """One row per cross-validation: per metric the mean ± sd over folds and the pooled out-of-fold
    value [95% interval]; ``per_fold`` adds each fold's row (its own test part) after it."""
    found = [(ds, run) for ds, scores in datasets.items() for run in scores.runs if run.folds is not None]
    if not found:
        return None
    ordinal = any(run.metrics["ordinal"] for _, run in found)
    metrics = [(title, key) for title, key in CV_METRICS if ordinal or key != "quadratic_weighted_kappa"]
    table = tables.Table(
        caption="Cross-validation (%): mean ± sd over folds, and the pooled out-of-fold test predictions "
                "(every image once) [95% interval: accuracy Wilson, others bootstrap]",
        row_header="dataset / model",
        groups=[("", ["folds", "n"]), *((title, ["mean ± sd", "pooled [95% CI]"]) for title, _ in metrics)],
    )
    for ds, run in found:
        group = run.folds
        pooled = headline_cells(run.metrics)
        cells: list[tables.Cell] = [str(len(group.names)), str(run.metrics["n"])]
        for _, key in metrics:
            cells += [seeds.mean_sd_text(group.mean.get(key), group.sd.get(key)),
                      pooled.get(key) or f"{100 * run.metrics[key]:.2f}"]
        table.rows.append((f"{ds} / {run.name}", cells))
        if per_fold:
            for name, fold in zip(group.names, group.metrics):  # the fold's own value, in the mean's column
                row: list[tables.Cell] = ["1", str(fold["n"])]
                for _, key in metrics:
                    row += [None if fold.get(key) is None else f"{100 * fold[key]:.2f}", None]
                table.rows.append((f"{ds} / {name}", row))
    return table


def paired_cells(comparisons: list[Comparison], n_boot: int,
                 decimals: int = 2) -> tuple[list[str], dict[tuple[str, str], dict[str, tuple[str, str]]]]:
    """The compared metrics, and per (reference, baseline): metric -> (difference text, p text)."""
    metrics = [m for m in COMPARED_METRICS if any(c.metric == m for c in comparisons)]
    pairs: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for c in comparisons:
        cells = pairs.setdefault((c.reference, c.baseline), {})
        if c.difference is None:
            continue
        text = tables.interval_text(c.difference, c.ci_low, c.ci_high, decimals=decimals)
        cells[c.metric] = (text + (" *" if c.significant else ""), tables.p_value_text(c.p_value, n_boot))
    return metrics, pairs


def paired_table(dataset: str, comparisons: list[Comparison], n_boot: int) -> tables.Table | None:
    if not comparisons:
        return None
    metrics, pairs = paired_cells(comparisons, n_boot)
    table = tables.Table(
        caption=f"Paired bootstrap differences on {dataset} (percentage points; * = 95% CI excludes 0)",
        row_header="comparison",
        groups=[(METRIC_TITLES[m], ["difference [95% CI]", "p"]) for m in metrics],
    )
    for (reference, baseline), found in pairs.items():
        cells: list[tables.Cell] = []
        for metric in metrics:
            cells += list(found.get(metric, ("–", "–")))
        table.rows.append((f"{reference} − {baseline}", cells))
    return table
