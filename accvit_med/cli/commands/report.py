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
    ordinal: bool = typer.Option(False, "--ordinal", help="Treat classes as ordinal grades (adds quadratic weighted kappa)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resamples."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples (0: no intervals, no paired tests)."),
    reference: Optional[str] = typer.Option(
        None, help="Model compared with every other run of its dataset.", show_default="the ACC-ViT runs"),
    paired: bool = typer.Option(True, "--paired/--no-paired",
                                help="Paired bootstrap differences (needs the same test images)."),
    ece_bins: int = typer.Option(15, "--ece-bins", help="Equal-width confidence bins for ECE."),
) -> None:
    """Per-class metrics with confidence intervals, the paper's tables (Markdown, CSV, LaTeX),
    confusion matrices and calibration figures for one or many runs.

    Examples:

      accvit-med report runs/ham10000/accvit_tiny/2024-05-01_1200

      accvit-med report runs/*/*/* --out reports/paper

      accvit-med report mine=preds.csv theirs=other.csv --dataset busi
    """
    from accvit_med.errors import UserError
    from accvit_med.reports import resolve_input, write_report

    if model is not None and len(inputs) > 1:
        raise UserError("--model names a single input; label several inputs as MODEL=PATH")
    runs = [resolve_input(spec, split, dataset, model, True if ordinal else None) for spec in inputs]
    if out is None:
        names = sorted({run.dataset for run in runs})
        out = Path("reports") / (names[0] if len(names) == 1 else "comparison")
    result = write_report(runs, out, seed=seed, n_boot=n_boot, split=split, paired=paired,
                          reference=reference, ece_bins=ece_bins, progress=True)
    _print_summary(result, n_boot)


def _print_summary(result, n_boot: int) -> None:
    """The headline numbers (one decimal: the files hold the full tables) and the notes."""
    from rich.console import Console
    from rich.table import Table

    from accvit_med.reports.report import COMPARED_METRICS
    from accvit_med.reports.tables import interval_text, p_value_text

    console = Console()
    table = Table(title="Test-set metrics (%, 95% bootstrap CI)")
    for column in ("dataset", "model", "n", "accuracy", "macro-F1", "macro-AUC", "QW kappa", "ECE"):
        # Names never wrap (they are what a reader looks for); numbers wrap at their spaces.
        table.add_column(column, justify="left" if column in ("dataset", "model") else "right",
                         no_wrap=column in ("dataset", "model"))
    for dataset, runs in result.datasets.items():
        for run in runs:
            m = run.metrics
            ci = m.get("ci", {})

            def cell(key: str) -> str:
                bounds = ci.get(key, {})
                return interval_text(m[key], bounds.get("low"), bounds.get("high"), decimals=1)

            table.add_row(dataset, run.name, str(m["n"]), cell("accuracy"), cell("macro_f1"),
                          cell("macro_auc"), cell("quadratic_weighted_kappa") if m["ordinal"] else "–",
                          "–" if m["ece"] is None else f"{100 * m['ece']:.1f}")
    for dataset, groups in result.seed_groups.items():
        from accvit_med.reports.seeds import mean_sd_text

        for group in groups:  # runs that differ only by seed: mean ± sd over the seeds
            m, sd = group.mean, group.sd
            text = lambda key: mean_sd_text(m.get(key), sd.get(key), decimals=1)  # noqa: E731
            table.add_row(dataset, group.label, str(m["n"]), text("accuracy"), text("macro_f1"), text("macro_auc"),
                          text("quadratic_weighted_kappa") if m["ordinal"] else "–", text("ece"))
    console.print(table)
    if result.comparisons:
        paired = Table(title="Paired bootstrap differences (points; * = CI excludes 0)")
        metrics = [m for m in COMPARED_METRICS if any(c["metric"] == m for c in result.comparisons)]
        for column in ("dataset", "comparison", *metrics):
            paired.add_column(column, justify="left" if column in ("dataset", "comparison") else "right",
                              no_wrap=column in ("dataset", "comparison"))
        rows: dict[tuple, dict] = {}
        for c in result.comparisons:
            rows.setdefault((c["dataset"], c["reference"], c["baseline"]), {})[c["metric"]] = c
        for (dataset, reference, baseline), found in rows.items():
            cells = []
            for metric in metrics:
                c = found.get(metric)
                if c is None or c["difference"] is None:
                    cells.append("–")
                    continue
                text = interval_text(c["difference"], c["ci_low"], c["ci_high"], decimals=1)
                p_text = p_value_text(c["p_value"], n_boot)
                p_text = f"p{p_text}" if p_text.startswith("<") else f"p={p_text}"
                cells.append(f"{text}{' *' if c['significant'] else ''} {p_text}")
            paired.add_row(dataset, f"{reference} - {baseline}", *cells)
        console.print(paired)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"report: {result.out_dir / 'report.md'}", markup=False, highlight=False)
