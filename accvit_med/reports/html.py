"""report.html: the whole report as one page that opens offline and can be mailed.

The page is rendered with Jinja2 (autoescape on: run names, class names and paths come from the
user) from ``templates/report.html.j2`` and the numbers report.json holds; its tables are the same
:class:`~accvit_med.reports.tables.Table` cells report.md and the CSV files show, and its figures
are the report's own PNGs, embedded as data URIs. A Content-Security-Policy meta tag forbids every
fetch but ``data:`` images and the inline style sheet, so the page cannot reach the network even
where a figure path or a template change would try. Sections whose data the report lacks are left
out with one line saying what would add them; the checklist map says which reporting items the
present sections address (:mod:`accvit_med.reports.checklist`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

from accvit_med.reports import checklist
from accvit_med.reports.sections import figure_path, file_name
from accvit_med.reports.tables import Cell, Table

if TYPE_CHECKING:
    import markupsafe

TEMPLATE = "report.html.j2"


@dataclass
class Figure:
    src: str  # a data: URI
    caption: str
    size: str = ""  # "" (three to a row), "half" (two panels: two to a row) or "wide" (the page's width)


@dataclass
class Block:
    """One element of a section: a paragraph, a table, a row of figures or the failure gallery."""

    kind: str  # "text", "table", "figures", "gallery", "checklist", "list"
    text: str = ""
    table: Optional[Table] = None
    figures: list[Figure] = field(default_factory=list)
    items: list = field(default_factory=list)
    table_id: str = ""


@dataclass
class PageSection:
    key: str  # the anchor, and the checklist's name of the section
    title: str
    blocks: list[Block] = field(default_factory=list)
    missing: str = ""  # when the report lacks its data: what would add it

    @property
    def present(self) -> bool:
        return not self.missing


class Page:
    """What the sections read: report.json's content, the rendered tables by file stem and the folder
    holding the figures."""

    def __init__(self, report: dict, tables: Mapping[str, Table], folder: Path):
        self.report, self.tables, self.folder = report, tables, folder
        self.sections = report.get("sections", {})

    def figure(self, path: str, caption: str, size: str = "") -> Optional[Figure]:
        file = self.folder / path
        if not file.is_file():
            return None
        kind = "image/png" if file.suffix == ".png" else "image/svg+xml"
        return Figure(f"data:{kind};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}", caption, size)

    def figures(self, found: list[tuple[str, str]], size: str = "") -> Optional[Block]:
        shown = [f for path, caption in found if (f := self.figure(path, caption, size)) is not None]
        return Block("figures", figures=shown) if shown else None

    def run_figures(self, kind: str, what: str, size: str = "", *more: tuple[str, str]) -> list[Block]:
        """One row of figures per data set: ``kind`` (then each of ``more``'s (kind, what)) of each of its runs."""
        blocks = []
        kinds = [(kind, what), *more]
        for ds, entry in self.report["datasets"].items():
            block = self.figures([(figure_path(ds, name, k), f"{name} on {ds}: {w}")
                                  for name in entry["runs"] for k, w in kinds], size)
            if block is not None:
                blocks.append(block)
        return blocks

    def stem_tables(self, suffix: str) -> list[Block]:
        return [Block("table", table=self.tables[f"{file_name(ds)}_{suffix}"])
                for ds in self.report["datasets"] if f"{file_name(ds)}_{suffix}" in self.tables]


def data_sections(page: Page) -> list[PageSection]:
    """The page's sections in reading order: what was found, from what, then the evidence section by section."""
    from accvit_med.reports import html_sections as hs  # it builds on this module's Block and Page

    return [hs.summary(page), hs.reproducibility(page), hs.flow(page), hs.tables_section(page),
            hs.operating_points(page), hs.calibration(page), hs.subgroups(page), hs.external(page),
            hs.paired(page), hs.learning_curves(page), hs.confusion(page), hs.roc(page), hs.gallery(page)]


def cell_text(table: Table, value: Cell) -> str:
    """A cell as report.md shows it ("–" for a blank)."""
    return "–" if value is None else table.cell_text(value)


def cell_parts(table: Table, value: Cell) -> tuple[str, str]:
    """A cell's estimate and its interval ("85.07", "[83.90, 86.20]"): the page sets the interval
    under the estimate, so tables of intervals fit a laptop's width."""
    head, bracket, tail = cell_text(table, value).partition(" [")
    return head, (bracket.strip() + tail) if bracket else ""


def code_spans(text) -> "markupsafe.Markup":
    """``text`` escaped, with its `backquoted` spans (commands, options, file names) as <code>."""
    from markupsafe import Markup, escape

    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backquote: plain text
        return escape(text)
    return Markup("").join(escape(part) if i % 2 == 0 else Markup("<code>%s</code>") % part
                           for i, part in enumerate(parts))


def render_html(report: dict, tables: Mapping[str, Table], folder: Path) -> str:
    """The page's text: report.json's ``report`` with its ``tables`` and the figures under ``folder``."""
    import jinja2

    from accvit_med.reports import html_sections as hs

    page = Page(report, tables, folder)
    sections = data_sections(page)
    present = {s.key for s in sections if s.present}
    sections += [hs.notes(page), checklist.section(present)]
    environment = jinja2.Environment(loader=jinja2.PackageLoader("accvit_med.reports", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True)
    environment.globals["cell_parts"] = cell_parts
    environment.filters["code"] = code_spans
    template = environment.get_template(TEMPLATE)
    return template.render(title=hs.page_title(report), tool=report["tool"], sections=sections,
                           csp=CONTENT_SECURITY_POLICY)


# Nothing leaves the file: no scripts, no fonts, no frames, no fetches; images only as data: URIs.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                           "base-uri 'none'; form-action 'none'")
