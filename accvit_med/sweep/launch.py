"""Running a plan: which runs to start, the worker that runs one, and the local launcher.

The worker (:func:`run_one`) is the same on this machine and inside a SLURM job: it decides at
start whether to resume (``checkpoints/last.pt`` is there), start, or (``force`` and a differing
recipe) start again, runs ``accvit-med finetune`` as a subprocess with its output in
``logs/finetune.log``, and records the outcome in ``logs/sweep.json``.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from accvit_med.fileio import atomic_write_json
from accvit_med.rundir.layout import RunDir
from accvit_med.sweep.plan import PlannedRun, SweepPlan
from accvit_med.sweep.state import RunState, log_path, read_marker, recipe_differences, run_states, update_marker

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Decision:
    state: RunState
    action: str  # start, resume, restart, skip

    @property
    def why(self) -> str:
        s = self.state
        if s.done and not (s.differs and self.action == "restart"):
            note = (f" (recipe differs, left alone; --force starts it again: {'; '.join(s.differs)})"
                    if s.differs else "")
            return "done" + note
        if s.active:
            return f"{s.state} (job {s.job_id})" if s.job_id else s.state
        if s.differs and self.action == "skip":
            return f"recipe differs, left alone (--force starts it again): {'; '.join(s.differs)}"
        return {
            "start": "start", "resume": f"resume after epoch {s.last_epoch}", "restart": "start again (--force)",
        }[self.action]


def decide(plan: SweepPlan, force: bool = False, slurm: Optional[bool] = None) -> list[Decision]:
    """What to do with each planned run: skip done, active and differing runs; resume the rest."""
    decisions = []
    for state in run_states(plan, slurm):
        if state.active:
            action = "skip"
        elif state.differs:
            action = "restart" if force else "skip"
        elif state.done:
            action = "skip"
        else:
            action = "resume" if state.resumable else "start"
        decisions.append(Decision(state, action))
    return decisions


def write_recipe_files(plan: SweepPlan) -> None:
    """Each data set's recipe as a finetune --config file (rewritten: the plan is the truth)."""
    for dataset, recipe in plan.recipes.items():
        atomic_write_json(plan.sweep_dir / "recipes" / f"{dataset}.json", recipe)


def worker_command(run: PlannedRun, force: bool, gpus: int = 1) -> list[str]:
    """The finetune command the worker runs now, from what the run directory holds."""
    restart = force and bool(recipe_differences(run))
    resume = not restart and RunDir(run.run_dir).last.is_file()
    return run.command(resume=resume, force=restart, gpus=gpus)


def _last_error_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["exited without output"])[-1][:300]


def run_one(run: PlannedRun, force: bool = False, gpus: int = 1, env: Optional[dict] = None,
            launcher: str = "local") -> int:
    """Run (or resume) one planned run to the end in a finetune subprocess; returns its exit code."""
    command = worker_command(run, force, gpus)
    job_id = _slurm_job_id()
    update_marker(run.run_dir, launcher=launcher, state="running", host=socket.gethostname(), pid=os.getpid(),
                  job_id=job_id or read_marker(run.run_dir).get("job_id") if launcher == "slurm" else None,
                  command=command, error=None, cuda_visible_devices=(env or {}).get("CUDA_VISIBLE_DEVICES"))
    log = log_path(run.run_dir)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    # finetune --force replaces the run folder (logs too): the marker goes into the new one.
    if code == 0:
        update_marker(run.run_dir, state="finished", exit_code=0)
    else:
        try:
            text = log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        update_marker(run.run_dir, state="failed", exit_code=code, error=_last_error_line(text))
    return code


def _slurm_job_id() -> Optional[str]:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _threads_per_slot(slots: int) -> dict[str, str]:
    """OMP_NUM_THREADS for runs that share this machine: its cores split between the slots.

    Each torch process otherwise starts one intra-op thread per core, so N runs at once would run
    N times as many threads as cores (torchrun sets 1 for the same reason). A value the user set wins.
    """
    if slots < 2 or "OMP_NUM_THREADS" in os.environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, cores // slots))}


def run_local(plan: SweepPlan, runs: Sequence[PlannedRun], force: bool = False,
              gpus: Optional[Sequence[str]] = None, echo: Echo = print) -> int:
    """Run ``runs`` here: one at a time, or one per GPU in ``gpus`` at once; returns how many failed."""
    write_recipe_files(plan)
    slots = list(gpus) if gpus else [None]
    threads_env = _threads_per_slot(len(slots))
    todo: "queue.Queue[PlannedRun]" = queue.Queue()
    for run in runs:
        todo.put(run)
    total, started = len(runs), time.monotonic()
    finished: list[tuple[PlannedRun, int]] = []
    lock = threading.Lock()

    def slot_loop(gpu: Optional[str]) -> None:
        while True:
            try:
                run = todo.get_nowait()
            except queue.Empty:
                return
            env = {**threads_env, **({} if gpu is None else {"CUDA_VISIBLE_DEVICES": gpu})}
            where = "" if gpu is None else f" on GPU {gpu}"
            echo(f"start {run.name}{where}; log {log_path(run.run_dir)}")
            began = time.monotonic()
            code = run_one(run, force=force, env=env)
            with lock:
                finished.append((run, code))
                done = len(finished)
                elapsed = time.monotonic() - started
                # Runs finish in waves of len(slots): the rate so far times the waves left.
                eta = elapsed / done * (total - done)
                outcome = "done" if code == 0 else f"FAILED (exit {code}): {read_marker(run.run_dir).get('error', '')}"
                echo(f"[{done}/{total}] {run.name} {outcome} in {time.monotonic() - began:.0f} s; "
                     f"{done / elapsed * 3600:.1f} runs/h, ETA {eta:.0f} s")

    threads = [threading.Thread(target=slot_loop, args=(gpu,), daemon=True) for gpu in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(1 for _, code in finished if code != 0)
