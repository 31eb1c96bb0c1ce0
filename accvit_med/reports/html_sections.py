"""The sections of report.html, each from report.json's content (see ``reports/html.py``).

Each function returns a :class:`~accvit_med.reports.html.PageSection`: its blocks when the report
has the data, otherwise one line saying what would add it. Tables that report.md shows as
Markdown lines only (flow, characteristics, subgroups, external validation, provenance) are laid
out here from the same numbers report.json stores.
"""

from __future__ import annotations

from accvit_med.reports.html import Block, Page, PageSection
from accvit_med.reports.sections import file_name
from accvit_med.reports.tables import Table, interval_text

SPLITS = ("train", "val", "test")
AGE_COLUMNS = ("age", "age_approx")


def page_title(report: dict) -> str:
    return "accvit-med report: " + ", ".join(report["datasets"])


def summary(page: Page) -> PageSection:
    r = page.report
    settings = r["settings"]
    what = []
    for ds, entry in r["datasets"].items():
        runs = entry["runs"]
        n = next(iter(runs.values()))["n"]
        what.append(f"{ds} ({len(entry['classes'])} classes: {', '.join(entry['classes'])}; {n} {settings['split']} "
                    f"images): {', '.join(runs)}")
    boot = (f"{settings['n_boot']} {settings['bootstrap']} bootstrap resamples (seed {settings['seed']})"
            if settings["n_boot"] else "no bootstrap resamples")
    blocks = [Block("list", items=what),
              Block("text", text=f"Intervals at {round(100 * settings['ci_level'])}%: accuracy with the Wilson "
                                 f"score interval, macro-F1, macro-AUC and kappa from {boot}.")]
    if "summary" in page.tables:
        blocks.append(Block("table", table=page.tables["summary"], table_id="headline"))
    return PageSection("summary", "Summary", blocks)


def _provenance_table(run: dict) -> Table:
    table = Table(caption=f"{run['dataset']} / {run['name']}", row_header="", groups=[("", ["value"])])
    rows = [("predictions", run["predictions"]), ("predictions sha256", run["sha256"]),
            ("run directory", run["run_dir"] or "– (a predictions file)")]
    record = run["record"]
    if record is not None and not record["recipe"]:
        rows.append(("config.json", "no recipe: predictions described by hand"))
    elif record is not None:
        split, weights = record["split"] or {}, record["weights"] or {}
        rows += [("seed", record["seed"]),
                 ("weights", "; ".join(f"{k} {v}" for k, v in weights.items()) or "–"),
                 ("split file", split.get("path", "–")), ("split sha256", split.get("sha256", "–")),
                 ("data root", record["data_root"]),
                 ("device, autocast", f"{record['device'] or '–'}, {record['amp_dtype'] or 'float32'}"),
                 ("environment", "; ".join(f"{k} {v}" for k, v in record["versions"].items()) or "–"),
                 ("command", " ".join(record["command"]) or "–")]
        if record["recipe"]:
            rows.append(("recipe", ", ".join(f"{k}={v}" for k, v in sorted(record["recipe"].items()))))
        if record["resumed_by"]:
            rows.append(("resumed by", " | ".join(" ".join(c) for c in record["resumed_by"])))
    table.rows = [(label, ["–" if value is None else str(value)]) for label, value in rows]
    return table


def reproducibility(page: Page) -> PageSection:
    found = page.sections.get("provenance")
    if not found:
        return PageSection("reproducibility", "Inputs and reproducibility",
                           missing="no provenance recorded (an older report)")
    me = found["report"]
    commit = me["git_commit"] or "not a git checkout"
    blocks = [Block("text", text=f"Written by {page.report['tool']} (git commit {commit}) with Python "
                                 f"{me['python']} on {me['platform']}. Settings: "
                                 + ", ".join(f"{k} {v}" for k, v in sorted(page.report["settings"].items())) + ".")]
    blocks += [Block("table", table=_provenance_table(run)) for run in found["runs"]]
    if not any(run["record"] for run in found["runs"]):
        blocks.append(Block("text", text="No run directory among the inputs: recipe, seed, weights and split are "
                                         "unknown (report the run directories `accvit-med finetune` writes)."))
    return PageSection("reproducibility", "Inputs and reproducibility", blocks)


def _flow_table(flow: dict) -> Table:
    table = Table(caption=f"Data flow of {flow['dataset']} (split file {flow['split_file']})", row_header="step",
                  groups=[("", ["images"])])
    table.rows.append(("image files found", ["–" if flow["images_found"] is None else flow["images_found"]]))
    table.rows += [(f"left out: {reason}", [n]) for reason, n in flow["left_out"].items()]
    table.rows.append(("in the split", [flow["samples"]]))
    for s in SPLITS:
        per_class = ", ".join(f"{c} {n}" for c, n in flow["counts"][s].items())
        table.rows.append((s, [f"{sum(flow['counts'][s].values())} ({per_class})"]))
    return table


def _characteristics_table(ds: str, found: dict) -> Table:
    parts = found["partitions"]
    names = [*SPLITS, "all"]
    table = Table(caption=f"Characteristics of each partition of {ds} (images; share of the partition)",
                  row_header="characteristic", groups=[("", names)])

    def share(p: str, n: int) -> str:
        total = parts[p]["n"]
        return f"{n} ({100 * n / total:.1f}%)" if total else "0"

    table.rows.append(("images", [parts[p]["n"] for p in names]))
    table.rows += [(f"class {c}", [share(p, parts[p]["classes"][c]) for p in names]) for c in parts["all"]["classes"]]
    for column in found["columns"]:
        if column.lower() in AGE_COLUMNS:
            cells = []
            for p in names:
                a = parts[p][column]
                mean = "–" if a["mean"] is None else f"{a['mean']:.1f}"
                sd = "–" if a["sd"] is None else f"{a['sd']:.1f}"
                cells.append(f"{mean} ± {sd} ({a['unknown']} unknown)")
            table.rows.append((f"{column}, mean ± sd", cells))
            continue
        table.rows += [(f"{column}: {level}", [share(p, parts[p][column].get(level, 0)) for p in names])
                       for level in parts["all"][column]]
    return table


def flow(page: Page) -> PageSection:
    found = page.sections.get("flow")
    title = "Data flow and characteristics of each partition"
    if not found:
        return PageSection("flow", title, missing="no split file beside the runs: report run directories written "
                                                  "by `accvit-med finetune` on a split made by `accvit-med split`")
    blocks = []
    for key, entry in found.items():
        ds, number = (key, "") if key in page.report["datasets"] else key.rsplit("_", 1)
        suffix = f"_{number}" if number else ""
        figure = page.figures([(f"figures/{file_name(ds)}/flow{suffix}.png", f"data flow of {ds}")], "wide")
        blocks += [b for b in (figure, Block("table", table=_flow_table(entry["flow"])),
                               Block("table", table=_characteristics_table(ds, entry["characteristics"]))) if b]
    return PageSection("flow", title, blocks)


def tables_section(page: Page) -> PageSection:
    blocks = [Block("table", table=page.tables["table1"])] if "table1" in page.tables else []
    blocks += page.stem_tables("per_class") + page.stem_tables("sensitivity_specificity_auc")
    return PageSection("tables", "Table 1 and per-class results", blocks)


def operating_points(page: Page) -> PageSection:
    found = page.sections.get("operating_points")
    title = "Clinical operating points"
    if not found:
        return PageSection("operating_points", title, missing=(
            "no binary clinical task with validation predictions: the data set declares none (pass "
            "`--positive CLASS[,CLASS...]`) or the runs lack predictions_val.csv"))
    blocks = []
    for ds, tasks in found.items():
        for task, runs in tasks.items():
            stem = f"{file_name(ds)}_operating_points_{file_name(task)}"
            if stem in page.tables:
                blocks.append(Block("table", table=page.tables[stem]))
            kind = f"operating_points_{file_name(task)}"
            figure = page.figures([(f"figures/{file_name(ds)}/{file_name(name)}_{kind}.png",
                                    f"{name}, {task}: ROC and precision-recall on test, points marked")
                                   for name in runs], size="half")
            if figure:
                blocks.append(figure)
    return PageSection("operating_points", title, blocks)


def calibration(page: Page) -> PageSection:
    found = page.sections.get("calibration")
    if not found:
        return PageSection("calibration", "Calibration", missing=(
            "no validation predictions to fit a temperature on: report run directories with "
            "predictions_val.csv (not `--split val`)"))
    blocks = page.stem_tables("calibration")
    for ds, runs in found.items():
        figure = page.figures([(f"figures/{file_name(ds)}/{file_name(name)}_reliability_calibrated.png",
                                f"{name} on {ds}: reliability before and after temperature scaling") for name in runs])
        if figure:
            blocks.append(figure)
    return PageSection("calibration", "Calibration", blocks)


def _pct(estimate: dict | None) -> str:
    if estimate is None or estimate.get("value") is None:
        return "–"
    return interval_text(estimate["value"], estimate.get("low"), estimate.get("high"), decimals=1)


def _subgroup_table(analysis: dict) -> Table:
    task = analysis["task"]
    columns = ["n", "share %", "accuracy % [95% CI]", "macro-F1 % [95% CI]"]
    if task:
        columns += ["prevalence %", "sensitivity % [95% CI]", "specificity % [95% CI]"]
    caption = (f"{analysis['run']} on {analysis['dataset']}" + (f", {task['name']}" if task else "")
               + f": {analysis['n']} test images; {analysis['method']}; levels under "
               f"{analysis['min_level_images']} images have no interval")
    table = Table(caption=caption, row_header="subgroup: level", groups=[("", columns)])
    for column in analysis["columns"]:
        for lv in column["levels"]:
            cells = [lv["n"], f"{100 * lv['share']:.1f}", _pct(lv["accuracy"]), _pct(lv["macro_f1"])]
            if task:
                cells += ["–" if lv["prevalence"] is None else f"{100 * lv['prevalence']:.1f}",
                          _pct(lv["sensitivity"]), _pct(lv["specificity"])]
            table.rows.append((f"{column['column']}: {lv['level']}", cells))
    return table


def subgroups(page: Page) -> PageSection:
    found = page.sections.get("subgroups")
    if not found:
        return PageSection("subgroups", "Subgroups", missing=(
            "no metadata columns in the split: see `accvit-med split --subgroups` (HAM10000 and EyePACS keep "
            "theirs)"))
    blocks = []
    for analysis in found.values():
        blocks.append(Block("table", table=_subgroup_table(analysis)))
        gaps = [f"{c['column']}, {g['metric'].replace('_', '-')}: {100 * g['gap']:.1f} points ({g['best']} vs "
                f"{g['worst']})" for c in analysis["columns"] for g in c["gaps"]]
        if gaps:
            blocks.append(Block("list", items=gaps, text="Largest gap between levels with enough images:"))
    return PageSection("subgroups", "Subgroups", blocks)


def external(page: Page) -> PageSection:
    found = page.sections.get("external")
    title = "External validation"
    if not found:
        return PageSection("external", title, missing=(
            "no external evaluation of the runs: see `accvit-med evaluate --run RUN --dataset NAME`"))
    table = Table(caption="Scored on data the runs never trained on; never pooled with the internal test",
                  row_header="data set / run",
                  groups=[("", ["external set", "images listed", "evaluated", "accuracy % [95% CI]",
                                "macro-F1 % [95% CI]", "macro-AUC %", "balanced acc %"])])
    notes = []
    for s in found["evaluations"]:
        auc, bal = s["macro_auc"], s["balanced_accuracy"]
        table.rows.append((f"{s['dataset']} / {s['run']}", [
            f"{s['name']} ({s['external_dataset']})", s["images_listed"], s["n"], _pct(s["accuracy"]),
            _pct(s["macro_f1"]), "–" if auc is None else f"{100 * auc:.1f}",
            "–" if bal is None else f"{100 * bal:.1f}"]))
        notes += [f"{s['dataset']} / {s['run']} on {s['name']}: {line}" for line in s["lines"]]
    blocks = [Block("table", table=table)] + ([Block("list", items=notes)] if notes else [])
    return PageSection("external", title, blocks)


def paired(page: Page) -> PageSection:
    blocks = page.stem_tables("paired")
    if not blocks:
        return PageSection("paired", "Paired comparisons", missing=(
            "no paired comparison: it needs two or more runs on the same test images, bootstrap resamples "
            "(`--n-boot` > 0) and `--paired`"))
    return PageSection("paired", "Paired comparisons", blocks)


def learning_curves(page: Page) -> PageSection:
    blocks = []
    for ds in page.report["datasets"]:
        figure = page.figures([(f"figures/{file_name(ds)}/curves_overlay.png", f"every run on {ds}")], "wide")
        if figure:
            blocks.append(figure)
    blocks += page.run_figures("curves", "learning curves", size="half")
    if not blocks:
        return PageSection("learning_curves", "Learning curves", missing=(
            "no history.csv beside the predictions: report run directories written by `accvit-med finetune`"))
    return PageSection("learning_curves", "Learning curves", blocks)


def confusion(page: Page) -> PageSection:
    blocks = [b for b in [page.figures([("figures/confusion_grid.png", "one row per data set, one column per model "
                                                                         "(counts, coloured by row rate)")],
                                       "wide")] if b]
    blocks += page.run_figures("confusion_normalized", "row-normalised")
    if not blocks:
        return PageSection("confusion", "Confusion matrices", missing="the figures were not drawn")
    return PageSection("confusion", "Confusion matrices", blocks)


def roc(page: Page) -> PageSection:
    blocks = page.run_figures("roc", "one-vs-rest ROC", "", ("reliability", "reliability (raw)"))
    if not blocks:
        return PageSection("roc", "ROC curves", missing="the figures were not drawn")
    if page.sections.get("operating_points"):
        blocks.insert(0, Block("text", text="Precision-recall curves of the binary clinical tasks are under "
                                            "Clinical operating points."))
    return PageSection("roc", "ROC and reliability curves", blocks)


def _src(page: Page, path: str | None) -> str | None:
    figure = page.figure(path, "") if path else None
    return None if figure is None else figure.src


def gallery(page: Page) -> PageSection:
    found = page.sections.get("gallery")
    if not found or not any(found["datasets"].values()):
        reason = found["missing"] if found else "no failure gallery recorded (an older report)"
        return PageSection("gallery", "Failure gallery", missing=reason)
    blocks = [Block("text", text=found["description"])]
    for ds, items in found["datasets"].items():
        shown = [{**item, "image_src": _src(page, item["image"]),
                  "runs": [{**run, "overlay_src": _src(page, run["overlay"])} for run in item["runs"]]}
                 for item in items]
        blocks.append(Block("gallery", text=ds, items=shown))
    return PageSection("gallery", "Failure gallery", blocks)


def notes(page: Page) -> PageSection:
    """Limits: small subgroups, recipe choices apart from the default recipe, and the report's notes
    (never-predicted classes among them)."""
    items = []  # never-predicted classes are among the report's notes
    for analysis in (page.sections.get("subgroups") or {}).values():
        small = [f"{c['column']}: {lv['level']} ({lv['n']})" for c in analysis["columns"] for lv in c["levels"]
                 if lv["n"] < analysis["min_level_images"]]
        if small:
            items.append(f"{analysis['dataset']} / {analysis['run']}: subgroups under {analysis['min_level_images']} "
                         f"images, shown without interval: {', '.join(small)}")
    for run in (page.sections.get("provenance") or {}).get("runs", []):
        differ = (run["record"] or {}).get("differs_from_default_recipe")
        if differ:
            items.append(f"{run['dataset']} / {run['name']} differs from the default recipe (the paper's protocol "
                         "where it gives one): " + ", ".join(f"{k} {v['run']} (default {v['default']})"
                                                             for k, v in differ.items()))
    items += page.report["notes"]
    unique = list(dict.fromkeys(items))  # each clinical task repeats its run's subgroup levels
    return PageSection("notes", "Limits and notes", [Block("list", items=unique or ["none"])])
