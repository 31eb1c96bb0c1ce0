"""Metrics, tables and figures from predictions files: what ``accvit-med report`` writes.

The library calls others use:

- :func:`classification_metrics` -> the metrics.json dict
- :func:`read_predictions` / :func:`write_predictions` -> the predictions CSV format
- :func:`write_report` -> a report folder (tables, figures, JSON) from runs or CSV files
"""

from accvit_med.reports.metrics import MetricWarning, classification_metrics
from accvit_med.reports.predictions import Predictions, read_predictions, write_predictions
from accvit_med.reports.report import ReportResult, write_report
from accvit_med.reports.runs import RunInput, resolve_input

__all__ = [
    "MetricWarning",
    "Predictions",
    "ReportResult",
    "RunInput",
    "classification_metrics",
    "read_predictions",
    "resolve_input",
    "write_predictions",
    "write_report",
]
