"""The run directory: the one place that knows how a run's folder is laid out, read and written."""
