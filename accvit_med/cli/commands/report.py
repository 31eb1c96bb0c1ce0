"""``accvit-med report``: metrics, tables and figures from run directories or predictions CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT...",
        help="Run directories (runs/<dataset>/<model>/<run>), predictions CSV files, or "
             "[DATASET/]MODEL=PATH to name a CSV or folder explicitly.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Report folder (replaced if it holds an earlier report).",
        show_default="reports/<dataset>, or reports/comparison for several datasets",
    ),
    split: str = typer.Option("test", help="Which predictions_<split>.csv to read from run directories."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name for inputs without a config.json."),
    model: Optional[str] = typer.Option(None, help="Model name for a single input without a config.json."),
    ordinal: bool = typer.Option(
        False, "--ordinal", help="Treat classes as ordinal grades (adds quadratic weighted kappa)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resamples."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples (0: no intervals, no paired tests)."),
    reference: Optional[str] = typer.Option(
        None, help="Model compared with every other run of its dataset.", show_default="the ACC-ViT runs"),
    paired: bool = typer.Option(True, "--paired/--no-paired",
                                help="Paired bootstrap differences (needs the same test images)."),
    ece_bins: int = typer.Option(15, "--ece-bins", help="Equal-width confidence bins for ECE."),
    bootstrap: str = typer.Option(
        "rows", "--bootstrap",
        help="Bootstrap resamples: rows (test images drawn with replacement) or stratified (within each class)."),
    positive: Optional[str] = typer.Option(
        None, "--positive", metavar="CLASS[,CLASS...]",
        help="Positive classes of a binary task to report at operating points (beside the data set's own tasks)."),
    gallery: int = typer.Option(
        12, "--gallery", metavar="N",
        help="report.html's failure gallery: the N most confident test errors per data set (0: none)."),
) -> None:
    """Per-class metrics with confidence intervals, the paper's tables (Markdown, CSV, LaTeX),
    confusion matrices and calibration figures for one or many runs, and report.html: all of it
    on one self-contained page.

    Examples:

      accvit-med report runs/ham10000/accvit_tiny/2024-05-01_1200

      accvit-med report runs/*/*/* --out reports/paper

      accvit-med report mine=preds.csv theirs=other.csv --dataset busi
    """
    from accvit_med.errors import UserError
    from accvit_med.reports import ReportSettings, resolve_input, write_report

    if model is not None and len(inputs) > 1:
        raise UserError("--model names a single input; label several inputs as MODEL=PATH")
    settings = ReportSettings(seed=seed, n_boot=n_boot, split=split, paired=paired, reference=reference,
                              ece_bins=ece_bins, bootstrap=bootstrap, progress=True, gallery=gallery,
                              positive=tuple(c.strip() for c in positive.split(",") if c.strip()) if positive else ())
    settings.check()
    runs = [resolve_input(spec, split, dataset, model, True if ordinal else None) for spec in inputs]
    if out is None:
        names = sorted({run.dataset for run in runs})
        out = Path("reports") / (names[0] if len(names) == 1 else "comparison")
    _print_summary(write_report(runs, out, settings))


def _print_summary(result) -> None:
    """The headline numbers (one decimal: the files hold the full tables) and the notes."""
    from rich.console import Console
    from rich.table import Table

    from accvit_med.reports.render import headline_rows, interval_methods, paired_cells

    console = Console()
    table = Table(title="Test-set metrics (%)", caption=interval_methods(result.settings))
    columns = {"n": "n", "accuracy": "accuracy", "macro_f1": "macro-F1", "macro_auc": "macro-AUC",
               "quadratic_weighted_kappa": "QW kappa", "ece": "ECE"}
    for column in ("dataset", "model", *columns.values()):
        # Names never wrap (they are what a reader looks for); numbers wrap at their spaces.
        table.add_column(column, justify="left" if column in ("dataset", "model") else "right",
                         no_wrap=column in ("dataset", "model"))
    for dataset, label, cells in headline_rows(result.scores, per_seed=True, decimals=1):
        table.add_row(dataset, label, *(cells[key] for key in columns))
    console.print(table)
    for dataset, scores in result.scores.items():
        if not scores.comparisons:
            continue
        metrics, pairs = paired_cells(scores.comparisons, result.settings.n_boot, decimals=1)
        paired = Table(title=f"Paired bootstrap differences on {dataset} (points; * = CI excludes 0)")
        for column in ("comparison", *metrics):
            paired.add_column(column, justify="left" if column == "comparison" else "right",
                              no_wrap=column == "comparison")
        for (reference, baseline), found in pairs.items():
            texts = []
            for metric in metrics:
                text, p_text = found.get(metric, ("–", None))
                if p_text is not None:
                    text += f" p{p_text}" if p_text.startswith("<") else f" p={p_text}"
                texts.append(text)
            paired.add_row(f"{reference} - {baseline}", *texts)
        console.print(paired)
    for line in _evidence_lines(result.sections):
        console.print(line, markup=False, highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"report: {result.out_dir / 'report.md'}", markup=False, highlight=False)
    console.print(f"one page, to open in a browser: {result.out_dir / 'report.html'}", markup=False, highlight=False)


def _evidence_lines(sections: dict) -> list[str]:
    """One line per calibrated run and per clinical task (its Youden point); the files hold the rest."""
    lines = []
    for dataset, runs in sections.get("calibration", {}).items():
        for name, found in runs.items():
            raw, calibrated = found["test_raw"], found["test_calibrated"]
            lines.append(f"calibration {dataset}/{name}: T = {found['temperature']:.2f} (fitted on validation), "
                         f"test ECE {100 * raw['ece']:.1f}% -> {100 * calibrated['ece']:.1f}%, "
                         f"NLL {raw['nll']:.3f} -> {calibrated['nll']:.3f}")
    for dataset, tasks in sections.get("operating_points", {}).items():
        for task, runs in tasks.items():
            for name, found in runs.items():
                point = found["points"][0]["test"]
                rates = ", ".join(f"{label} {'–' if point[key] is None else f'{100 * point[key]:.1f}%'}"
                                  for key, label in (("sensitivity", "sens"), ("specificity", "spec"),
                                                     ("ppv", "PPV"), ("npv", "NPV")))
                auroc = "–" if found["auroc"] is None else f"{found['auroc']:.3f}"
                lines.append(f"{task} {dataset}/{name}: AUROC {auroc}; at Youden's J from validation: {rates} (test)")
    return lines
