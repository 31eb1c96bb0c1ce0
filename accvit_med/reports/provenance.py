"""Inputs and reproducibility (CLAIM 43-44, TRIPOD+AI 18f): what made each run and this report.

Per run: its predictions file and sha256, and, for a run directory, the recipe (with the fields
that differ from the package's default recipe, the paper's protocol where the paper gives one),
seed, starting weights' provenance, split file and sha256, device, autocast dtype, library
versions and the command. For the report: the package version, the git commit of the package's
checkout when it is one, Python and the platform it ran on.
"""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from accvit_med import __version__
from accvit_med.reports.sections import Rendered, ReportData


def package_commit() -> Optional[str]:
    """The commit of the git checkout holding this package (an editable install), else None."""
    folder = Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _paper_differences(recipe: Any) -> dict[str, dict[str, Any]]:
    """The recipe's fields whose value is not the default recipe's (the paper's protocol)."""
    from accvit_med.training.recipe import FinetuneRecipe

    if not isinstance(recipe, FinetuneRecipe):
        return {}
    differ = {}
    for f in dataclasses.fields(FinetuneRecipe):
        if f.name in ("model", "seed"):
            continue  # what is compared, and the seed, are a study's own choices
        default = getattr(FinetuneRecipe(), f.name)
        if getattr(recipe, f.name) != default:
            differ[f.name] = {"run": getattr(recipe, f.name), "default": default}
    return differ


def run_provenance(run_dir: Optional[str]) -> Optional[dict]:
    """What a run directory's config.json records (None without one)."""
    from accvit_med.rundir.layout import RunDir

    if run_dir is None:
        return None
    try:
        record = RunDir(Path(run_dir)).record_if_any()
    except (ValueError, KeyError, TypeError, OSError):
        return None
    if record is None:
        return None
    recipe = record.recipe.to_dict() if record.recipe is not None else None
    return {
        "recipe": recipe, "seed": None if recipe is None else recipe.get("seed"),
        "weights": None if record.weights is None else dict(record.weights),
        "split": None if record.split is None else record.split.to_dict(),
        "data_root": record.data_root, "device": record.device, "amp_dtype": record.amp_dtype,
        "versions": dict(record.versions), "command": list(record.command),
        "resumed_by": [list(c) for c in record.resumed_by],
        "differs_from_default_recipe": _paper_differences(record.recipe),
    }


def provenance_section(data: ReportData) -> Rendered:
    """Report section: numbers only (report.json, the HTML page); report.md lists the inputs in its header."""
    runs = [{**entry, "record": run_provenance(entry["run_dir"])} for entry in data.inputs]
    report = {"version": __version__, "git_commit": package_commit(), "python": sys.version.split()[0],
              "platform": platform.platform()}
    lines = []
    for run in runs:
        record = run["record"]
        if record is None:
            continue
        split = record["split"] or {}
        weights = record["weights"] or {}
        lines.append(f"- {run['dataset']} / {run['name']}: seed {record['seed']}, weights "
                     f"{weights.get('spec', '–')}, split `{split.get('path', '–')}` "
                     f"(sha256 `{split.get('sha256', '–')}`), device {record['device'] or '–'}")
    markdown = ["## Reproducibility", "", *lines, ""] if lines else []
    return Rendered(markdown=markdown, data={"report": report, "runs": runs})
