"""``write_report``: one folder of tables, figures and JSON from one or many runs.

Inputs are grouped by data set and scored (``scoring``), the report's sections are rendered
(``contents``, ``sections``) and written into a staging folder that replaces ``out_dir`` at the
end (``publish``), so an interrupted report leaves the previous one intact; the same inputs and
seed give byte-identical files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from accvit_med.errors import UserError
from accvit_med.reports import folds, seeds
from accvit_med.reports.comparisons import Comparison
from accvit_med.reports.ordering import dataset_key
from accvit_med.reports.publish import check_out_dir, publish
from accvit_med.reports.runs import RunInput, resolve_input
from accvit_med.reports.scoring import DatasetScores, ScoredRun, score_dataset
from accvit_med.reports.sections import ReportData
from accvit_med.reports.settings import ReportSettings


@dataclass
class ReportResult:
    out_dir: Path
    scores: dict[str, DatasetScores]
    notes: list[str]
    settings: ReportSettings
    files: list[str] = field(default_factory=list)
    sections: dict = field(default_factory=dict)  # each section's numbers, as report.json holds them

    @property
    def datasets(self) -> dict[str, list[ScoredRun]]:
        return {ds: scores.runs for ds, scores in self.scores.items()}

    @property
    def comparisons(self) -> list[Comparison]:
        return [c for scores in self.scores.values() for c in scores.comparisons]

    @property
    def seed_groups(self) -> dict[str, list[seeds.SeedGroup]]:
        return {ds: scores.seed_groups for ds, scores in self.scores.items() if scores.seed_groups}


def write_report(inputs: Iterable[str | os.PathLike | RunInput], out_dir: str | os.PathLike,
                 settings: ReportSettings | None = None, **changes) -> ReportResult:
    """Score every input and write the report folder ``out_dir``; returns what was computed.

    ``settings`` holds every choice (defaults: :class:`ReportSettings`); keyword arguments change
    single settings, e.g. ``write_report(runs, out, n_boot=2000, seed=1)``.
    """
    from accvit_med.reports.contents import SECTIONS
    from accvit_med.reports.writer import render_sections, write_contents

    settings = replace(settings or ReportSettings(), **changes)
    inputs = list(inputs)
    if not inputs:
        raise UserError("no inputs; pass run directories or predictions CSV files")
    if settings.model is not None and len(inputs) > 1:
        raise UserError("--model names a single input; label several inputs as MODEL=PATH")
    settings.check()
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    runs = [x if isinstance(x, RunInput) else
            resolve_input(x, settings.split, settings.dataset, settings.model, settings.ordinal)
            for x in inputs]
    runs, fold_notes = folds.pool(runs) if settings.split == "test" else (runs, [])

    if settings.positive and not any(set(settings.positive) <= set(run.classes) for run in runs):
        raise UserError(f"--positive {','.join(settings.positive)} names classes no input has all of "
                        f"(e.g. {', '.join(runs[0].classes)}); pass class names separated by commas")
    scores: dict[str, DatasetScores] = {}
    notes: list[str] = list(fold_notes)
    for name in sorted({run.dataset for run in runs}, key=dataset_key):
        scores[name] = score_dataset(name, [run for run in runs if run.dataset == name], settings)
        notes += scores[name].notes
    if settings.reference is not None and settings.paired and settings.n_boot > 0 and \
            not any(s.comparisons for s in scores.values()):
        raise UserError(f"--reference '{settings.reference}' matches no run that has another run on its "
                        "dataset; pass one of the report's model names")
    if not settings.paired:
        notes.append("paired comparisons skipped (--no-paired)")
    elif settings.n_boot == 0:
        notes.append("paired comparisons and confidence intervals skipped (no bootstrap resamples)")

    data = ReportData(settings, scores, notes)
    rendered = render_sections(data, SECTIONS)
    files = publish(out_dir, lambda folder: write_contents(data, rendered, folder))
    sections = {section.key: part.data for section, part in rendered if part.data is not None}
    return ReportResult(out_dir, scores, data.notes, settings, files, sections)
