"""Metrics, tables and figures from predictions files: what ``accvit-med report`` writes.

The library calls others use:

- :func:`classification_metrics` -> the metrics.json dict
- :func:`read_predictions` / :func:`write_predictions` -> the predictions CSV format
- :func:`write_report` -> a report folder (tables, figures, JSON) from runs or CSV files, with
  its choices in a :class:`ReportSettings`
- :class:`Section` / :class:`Rendered` -> a section of the report (``reports/contents.py`` lists them)
"""

from accvit_med.reports.metrics import MetricWarning, classification_metrics
from accvit_med.reports.predictions import Predictions, read_predictions, write_predictions
from accvit_med.reports.report import ReportResult, write_report
from accvit_med.reports.runs import RunInput, resolve_input
from accvit_med.reports.sections import Rendered, ReportData, Section
from accvit_med.reports.settings import ReportSettings

__all__ = [
    "MetricWarning",
    "Predictions",
    "Rendered",
    "ReportData",
    "ReportResult",
    "ReportSettings",
    "RunInput",
    "Section",
    "classification_metrics",
    "read_predictions",
    "resolve_input",
    "write_predictions",
    "write_report",
]
