"""The checklist map: which CLAIM 2024, TRIPOD+AI and STARD 2015 items a report's sections address.

An item a report can address is "covered" only when the section that addresses it is present in
this report (the page leaves a section out when it lacks the data); the items no software can
answer (ethics, annotation protocol, intended use...) are listed as the author's to write. Item
numbers are given where the project's evaluation notes cite them; the others are named by topic:
check the numbering against the published checklist before submission.
"""

from __future__ import annotations

from dataclasses import dataclass

# (item, guideline items, section key of report.html)
ADDRESSABLE: tuple[tuple[str, str, str], ...] = (
    ("Data sources and partitions (how images were split, at which level)", "CLAIM; TRIPOD+AI", "flow"),
    ("Flow of participants / images, with exclusions", "CLAIM 33; STARD 19; TRIPOD+AI", "flow"),
    ("Characteristics of each partition (classes, demographics)", "CLAIM 34; STARD 20", "flow"),
    ("Reference standard field (the label of each image in the predictions)", "CLAIM; STARD", "reproducibility"),
    ("Performance metrics with uncertainty (95% intervals)", "CLAIM; TRIPOD+AI; STARD 14, 24", "summary"),
    ("Per-class results", "CLAIM", "tables"),
    ("Index test vs reference standard cross-tabulation", "STARD 23", "confusion"),
    ("Cut-offs chosen on validation, applied to test", "STARD 12a", "operating_points"),
    ("Calibration", "TRIPOD+AI", "calibration"),
    ("Performance in subgroups (fairness)", "CLAIM 38; TRIPOD+AI 23a", "subgroups"),
    ("External validation, reported apart from internal", "CLAIM 32; TRIPOD+AI 12, 23", "external"),
    ("Statistical comparison of models", "CLAIM", "paired"),
    ("Training details (learning curves)", "CLAIM", "learning_curves"),
    ("Failure analysis (most confident errors)", "CLAIM", "gallery"),
    ("Code, software version, recipe, seed and weights", "CLAIM; TRIPOD+AI", "reproducibility"),
)

AUTHORS: tuple[tuple[str, str], ...] = (
    ("Ethics approval, consent or its waiver", "CLAIM; TRIPOD+AI"),
    ("Annotation protocol: who labelled, instructions, inter-rater agreement", "CLAIM; STARD"),
    ("Definition and rationale of the reference standard", "CLAIM; STARD"),
    ("Intended use and clinical role of the model", "CLAIM; TRIPOD+AI"),
    ("Eligibility criteria and recruitment of participants", "CLAIM; STARD; TRIPOD+AI"),
    ("Sample size rationale", "TRIPOD+AI; STARD"),
    ("Data and code availability statement (where they can be obtained)", "CLAIM; TRIPOD+AI"),
    ("Funding, conflicts of interest, registration", "CLAIM; TRIPOD+AI"),
    ("Limitations and generalisability in the discussion", "CLAIM; TRIPOD+AI"),
)


@dataclass(frozen=True)
class ChecklistRow:
    item: str
    guideline: str
    section: str  # the section key ("" for the author's items)
    covered: bool


def checklist_rows(present: set[str]) -> list[ChecklistRow]:
    """Every item: the report's (covered when its section is in ``present``), then the author's."""
    return ([ChecklistRow(item, guideline, key, key in present) for item, guideline, key in ADDRESSABLE]
            + [ChecklistRow(item, guideline, "", False) for item, guideline in AUTHORS])


def section(present: set[str]):
    """The page's checklist section."""
    from accvit_med.reports.html import Block, PageSection

    return PageSection("checklist", "Reporting checklist map", [
        Block("text", text="Items a report can address, and the section of this page that does; an item is "
                           "covered only when its section is present here. The items below the line are the "
                           "author's to write. Item numbers where given; check them against the published "
                           "checklists (CLAIM 2024, TRIPOD+AI 2024, STARD 2015)."),
        Block("checklist", items=checklist_rows(present))])
