"""The clinical binary tasks a data set adapter declares (its module's ``CLINICAL_TASKS``):
task name -> the classes that count as positive."""

from __future__ import annotations

import importlib

_ADAPTERS = ("ham10000", "eyepacs", "busi")


def clinical_tasks(dataset: str) -> dict[str, tuple[str, ...]]:
    """The declared tasks of data set ``dataset`` ({} for one without, e.g. csv or folder data)."""
    name = dataset.lower()
    if name not in _ADAPTERS:
        return {}
    module = importlib.import_module(f"accvit_med.datasets.{name}")
    return {task: tuple(classes) for task, classes in getattr(module, "CLINICAL_TASKS", {}).items()}
