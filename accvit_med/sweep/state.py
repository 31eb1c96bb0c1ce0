"""Where each run of a plan stands, read from its run directory (and SLURM's queue).

A run directory is the finetune run's own (config.json, history.csv, checkpoints/last.pt,
metrics.json) plus ``logs/``, which the sweep writes: ``logs/finetune.log`` (the run's output) and
``logs/sweep.json`` (launcher, SLURM job id, process, last state and error line). States:

- done: metrics.json and predictions_test.csv are there;
- queued / running: its SLURM job is pending / running (squeue), or its local process is alive;
- failed: the last attempt ended with an error (the log's last error line) or was killed;
- pending: nothing started yet.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_json
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import best_val_loss
from accvit_med.sweep.plan import PlannedRun, SweepPlan
from accvit_med.training.recipe import RUNTIME_FIELDS

_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "CONFIGURING", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


def marker_path(run_dir: Path) -> Path:
    return RunDir(run_dir).sweep_marker


def log_path(run_dir: Path) -> Path:
    return RunDir(run_dir).log_file


def read_marker(run_dir: Path) -> dict:
    try:
        data = json.loads(marker_path(run_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_marker(run_dir: Path, **values) -> None:
    marker_path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker_path(run_dir), {**read_marker(run_dir), **values})


@dataclass
class RunState:
    run: PlannedRun
    state: str  # pending, queued, running, done, failed
    detail: str = ""  # the failed run's last error line, or why it is left alone
    last_epoch: int = 0
    best_val_loss: Optional[float] = None
    test_macro_f1: Optional[float] = None
    job_id: Optional[str] = None
    differs: list[str] = field(default_factory=list)  # "lr: 0.001 in the run, 5e-05 in the plan"

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def resumable(self) -> bool:
        return RunDir(self.run.run_dir).last.is_file()


def recipe_differences(run: PlannedRun) -> list[str]:
    """What the run directory's recipe has that the plan does not (runtime settings aside)."""
    try:
        record = RunDir(run.run_dir).record_if_any()
    except (OSError, UserError):
        return []
    if record is None or record.recipe is None or record.task != "finetune":
        return []
    stored, planned = record.recipe.to_dict(), run.config.to_dict()
    return [f"{key}: {stored.get(key)!r} in the run, {planned[key]!r} in the plan"
            for key in planned if key not in RUNTIME_FIELDS and stored.get(key) != planned[key]]


def _history(run_dir: Path) -> tuple[int, Optional[float]]:
    try:
        rows = RunDir(run_dir).history()
    except (OSError, UserError):
        return 0, None
    return len(rows), best_val_loss(rows)


def _macro_f1(run_dir: Path) -> Optional[float]:
    try:
        return float(json.loads(RunDir(run_dir).metrics.read_text(encoding="utf-8"))["macro_f1"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def slurm_queue(attempts: int = 3) -> Optional[dict[str, str]]:
    """Job id (array tasks as A_a) -> SLURM state, for every job squeue lists; {} without SLURM,
    None when squeue fails (a busy controller): then nobody can tell a finished job from a live one."""
    if shutil.which("squeue") is None:
        return {}
    for attempt in range(attempts):
        try:
            listing = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout
            break
        except (OSError, subprocess.SubprocessError):
            if attempt + 1 == attempts:
                return None
            time.sleep(2)
    jobs = {}
    for line in listing.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            jobs[job] = state
    return jobs


def _process_alive(marker: dict) -> bool:
    if marker.get("host") != socket.gethostname() or not marker.get("pid"):
        return False
    try:
        os.kill(int(marker["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True


def run_state(run: PlannedRun, queue: Optional[dict[str, str]]) -> RunState:
    """``queue``: slurm_queue()'s answer; None (unreadable) trusts the run's marker for SLURM jobs."""
    run_dir = run.run_dir
    marker = read_marker(run_dir)
    last_epoch, best = _history(run_dir)
    result = RunState(run, "pending", last_epoch=last_epoch, best_val_loss=best,
                      test_macro_f1=_macro_f1(run_dir), job_id=marker.get("job_id"),
                      differs=recipe_differences(run))
    job_state = queue.get(str(result.job_id)) if result.job_id and queue is not None else None
    if RunDir(run_dir).metrics.is_file() and RunDir(run_dir).predictions("test").is_file():
        result.state = "done"
    elif queue is None and marker.get("launcher") == "slurm" and marker.get("state") in ("queued", "running"):
        result.state, result.detail = marker["state"], "SLURM's queue could not be read (squeue failed)"
    elif job_state in _QUEUED:
        result.state = "queued"
    elif job_state in _RUNNING:
        result.state = "running"
    elif marker.get("state") == "failed":
        result.state, result.detail = "failed", marker.get("error") or "failed (see logs/finetune.log)"
    elif marker.get("state") == "running" and not (marker.get("launcher") == "local" and _process_alive(marker)):
        where = f"job {result.job_id}" if result.job_id else f"process {marker.get('pid')}"
        result.state, result.detail = "failed", f"{where} ended during epoch {last_epoch + 1} (killed or cancelled)"
    elif marker.get("state") == "running":
        result.state = "running"
    elif marker.get("state") == "queued" and result.job_id:
        result.state, result.detail = "failed", f"job {result.job_id} left the queue before it started"
    return result


def run_states(plan: SweepPlan, slurm: Optional[bool] = None) -> list[RunState]:
    """Every planned run's state; SLURM's queue is read when any run has a job id (or slurm=True)."""
    markers = [read_marker(run.run_dir) for run in plan.runs]
    wants_queue = slurm if slurm is not None else any(m.get("job_id") for m in markers)
    queue = slurm_queue() if wants_queue else {}
    return [run_state(run, queue) for run in plan.runs]


def status_rows(states: list[RunState]) -> list[list[str]]:
    """The --status table's rows: run, state, last epoch, best val loss, test macro-F1, job."""
    rows = []
    for s in states:
        state = s.state if not s.detail else f"{s.state}: {s.detail}"
        if s.differs:
            state += f" (recipe differs: {'; '.join(s.differs)})"
        rows.append([
            s.run.name, state, f"{s.last_epoch}/{s.run.config.epochs}",
            "–" if s.best_val_loss is None else f"{s.best_val_loss:.4f}",
            "–" if s.test_macro_f1 is None else f"{s.test_macro_f1:.4f}",
            s.job_id or "–",
        ])
    return rows
