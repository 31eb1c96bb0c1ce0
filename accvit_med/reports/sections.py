"""The report as a list of sections: each a function from the report's data to its rendered part.

A section returns a :class:`Rendered`: Markdown lines for report.md, tables (written as .md, .csv
and .tex), figures (drawn only when the report is written), other text files and images, the JSON-ready
numbers it shows (stored in report.json under the section's key, so report.json holds every
number the report prints) and notes (listed under "Notes"). The report renders the sections of
``reports/contents.py`` in their order; a new section is one line there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from matplotlib.figure import Figure

from accvit_med.reports.scoring import DatasetScores
from accvit_med.reports.settings import ReportSettings
from accvit_med.reports.tables import Table


@dataclass
class ReportData:
    """What every section reads: the settings, the scored data sets (in the paper's order), the
    report's inputs (one dict per run, as report.json lists them) and the notes so far."""

    settings: ReportSettings
    datasets: Mapping[str, DatasetScores]
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[dict]:
        listed = []
        for ds, scores in self.datasets.items():
            for run in scores.runs:
                # A pooled cross-validation is listed as its fold runs, whose files it read.
                members = [(run.run, run.name)] if run.run.cv is None else \
                    list(zip(run.run.cv.members, run.folds.names))
                listed += [{"dataset": ds, "name": name, "model": member.model, "predictions": member.source,
                            "sha256": member.sha256, "run_dir": member.run_dir} for member, name in members]
        return listed


@dataclass(frozen=True)
class TableFiles:
    """A table written as ``<stem>.md``, ``.csv`` and ``.tex``; ``csv`` replaces it in the CSV
    (e.g. with per-seed rows added)."""

    table: Table
    csv: Table | None = None


@dataclass
class Rendered:
    markdown: list[str] = field(default_factory=list)  # lines of report.md, without line ends
    tables: dict[str, TableFiles] = field(default_factory=dict)  # file stem -> table
    figures: dict[str, Callable[[], Figure]] = field(default_factory=dict)  # "figures/....png" -> drawer
    files: dict[str, str] = field(default_factory=dict)  # other text files: path -> content
    images: dict[str, bytes] = field(default_factory=dict)  # PNG files made without matplotlib: path -> bytes
    data: dict | list | None = None  # JSON-ready numbers, report.json[section key]; None: not stored
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    key: str  # report.json key of its data, unique
    render: Callable[[ReportData], Rendered]


def json_text(obj) -> str:
    """A JSON file's text as the report writes every JSON file (sorted keys, indent 2)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def file_name(text: str) -> str:
    """``text`` as a safe file or folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def figure_path(dataset: str, name: str, kind: str) -> str:
    """Where a run's figure of ``kind`` goes: figures/<dataset>/<run>_<kind>.png."""
    return f"figures/{file_name(dataset)}/{file_name(name)}_{kind}.png"
