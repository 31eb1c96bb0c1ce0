"""Writing a report folder's contents: every section rendered in order, then its files.

report.json holds every number the report shows: the scored data sets, the comparisons, the seed
groups and notes, and under ``sections`` each section's own numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure

from accvit_med import __version__
from accvit_med.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from accvit_med.reports import figures, tables
from accvit_med.reports.bootstrap import CI_LEVEL
from accvit_med.reports.html import render_html
from accvit_med.reports.sections import Rendered, ReportData, Section


def render_sections(data: ReportData, sections: Sequence[Section]) -> list[tuple[Section, Rendered]]:
    """Render ``sections`` in order; each one's notes join ``data.notes`` before the next runs."""
    done = []
    for section in sections:
        rendered = section.render(data)
        data.notes += rendered.notes
        done.append((section, rendered))
    return done


def write_contents(data: ReportData, rendered: list[tuple[Section, Rendered]], folder: Path) -> list[str]:
    """Write the rendered sections, report.json and report.md into ``folder``; the files, sorted."""
    files: list[str] = []
    drawers: dict[str, Callable[[], Figure]] = {}
    for _, part in rendered:
        for stem, table in part.tables.items():
            for suffix, write in (("md", tables.to_markdown), ("csv", tables.to_csv), ("tex", tables.to_latex)):
                chosen = table.csv if suffix == "csv" and table.csv is not None else table.table
                atomic_write_text(folder / f"{stem}.{suffix}", write(chosen))
                files.append(f"{stem}.{suffix}")
        for path, text in part.files.items():
            atomic_write_text(folder / path, text)
            files.append(path)
        for path, content in part.images.items():
            atomic_write_bytes(folder / path, content)
            files.append(path)
        drawers.update(part.figures)
    files += save_figures(drawers, folder, data.settings.progress)

    datasets = data.datasets
    report = {
        "tool": f"accvit-med {__version__}",
        "settings": {**data.settings.recorded(), "ci_level": CI_LEVEL},
        "inputs": data.inputs,
        "datasets": {ds: {"classes": scores.classes, "ordinal": scores.ordinal,
                          "runs": {run.name: run.metrics for run in scores.runs}}
                     for ds, scores in datasets.items()},
        "comparisons": [c.to_json() for scores in datasets.values() for c in scores.comparisons],
        "seed_groups": {ds: [{"label": g.label, "model": g.model, "runs": g.names, "seeds": g.seeds,
                              "mean": g.mean, "sd": g.sd} for g in scores.seed_groups]
                        for ds, scores in datasets.items() if scores.seed_groups},
        "notes": data.notes,
    }
    numbers = {section.key: part.data for section, part in rendered if part.data is not None}
    if numbers:
        report["sections"] = numbers
    atomic_write_json(folder / "report.json", report)
    lines = [line for _, part in rendered for line in part.markdown]
    atomic_write_text(folder / "report.md", "\n".join(lines) + "\n")
    # The page reads report.json's content back, so it shows exactly the numbers the JSON file holds.
    saved = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    page_tables = {stem: table.table for _, part in rendered for stem, table in part.tables.items()}
    atomic_write_text(folder / "report.html", render_html(saved, page_tables, folder))
    return sorted(files + ["report.json", "report.md", "report.html"])


def save_figures(drawers: dict[str, Callable[[], Figure]], folder: Path, progress: bool) -> list[str]:
    """Draw and save every figure (the slow part of a report: a progress bar when asked)."""
    from accvit_med.progress import progress_bar

    with progress_bar(progress, transient=True) as bar:
        task = bar.add_task("figures", total=len(drawers))
        for path, draw in drawers.items():
            figures.save_png(draw(), folder / path)
            bar.advance(task)
    return list(drawers)
