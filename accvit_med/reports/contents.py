"""The report's table of contents: its sections in the order report.md shows them.

Each line names a section's report.json key and its function (see ``reports/sections.py``).
"""

from __future__ import annotations

from accvit_med.reports import core_sections as core
from accvit_med.reports import external, flow, subgroups
from accvit_med.reports.calibration_section import calibration_section
from accvit_med.reports.gallery import gallery_section
from accvit_med.reports.operating_points_section import operating_points_section
from accvit_med.reports.provenance import provenance_section
from accvit_med.reports.sections import Section

SECTIONS: list[Section] = [
    Section("header", core.header),
    Section("provenance", provenance_section),
    Section("table1", core.table1_section),
    Section("summary", core.summary_section),
    Section("cross_validation", core.cross_validation_section),
    Section("flow", flow.flow_section),
    Section("datasets_detail", core.datasets_section),
    Section("calibration", calibration_section),
    Section("operating_points", operating_points_section),
    Section("subgroups", subgroups.subgroups_section),
    Section("external", external.external_section),
    Section("confusion_grid", core.confusion_grid_section),
    Section("gallery", gallery_section),
    Section("notes", core.notes_section),  # last: it lists every section's notes
]
