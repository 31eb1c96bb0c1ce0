"""``--launcher slurm``: the plan's runs as one SLURM job array, submitted through submitit.

Each array task runs :func:`accvit_med.sweep.launch.run_one` for one run with the plan's
``[slurm]`` resources. On pre-emption or time-out SLURM signals the job, submitit calls
:meth:`SweepTask.checkpoint` and requeues the task, and the requeued task resumes the run from
``checkpoints/last.pt`` (the worker decides that from the run directory when it starts).
Submitit's own files (pickled task, stdout/stderr per task) go to ``<out>/.sweep/slurm/``; the
run's output is in ``<run>/logs/finetune.log``.
"""

from __future__ import annotations

import shutil
from typing import Optional, Sequence

from accvit_med.errors import UserError
from accvit_med.sweep.launch import run_one, write_recipe_files
from accvit_med.sweep.plan import PlannedRun, SweepPlan
from accvit_med.sweep.state import update_marker

try:  # a plain import; kept optional so that the rest of the toolkit works without it
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit is a dependency
    submitit = None
    Checkpointable = object


def check_slurm() -> None:
    """UserError unless SLURM's commands and submitit are here."""
    missing = [name for name in ("sbatch", "squeue", "scontrol") if shutil.which(name) is None]
    if missing:
        raise UserError(f"--launcher slurm needs SLURM's {', '.join(missing)} on PATH, not found on this machine; "
                        "run the sweep on the cluster's login node or use --launcher local")
    if submitit is None:
        raise UserError("--launcher slurm needs the submitit package; pip install submitit")


class SweepTask(Checkpointable):
    """One run of the grid as a SLURM task; requeued (same arguments) on pre-emption or time-out."""

    def __call__(self, run: PlannedRun, force: bool, gpus: int) -> int:
        code = run_one(run, force=force, gpus=gpus, launcher="slurm")
        if code != 0:
            # Raising marks the SLURM task failed (sacct, submitit) as well as logs/sweep.json.
            log_file = run.run_dir / "logs" / "finetune.log"
            raise RuntimeError(f"{run.name}: finetune exited with code {code}; see {log_file}")
        return code


def executor(plan: SweepPlan, max_parallel: Optional[int] = None):
    """A submitit executor with the plan's per-run resources."""
    settings = plan.slurm
    parameters = {
        "job_name": "accvit-sweep",
        "time": settings.minutes,
        "nodes": 1,
        "ntasks_per_node": 1,  # one worker per run; torchrun starts the per-GPU processes
        "cpus_per_task": settings.cpus,
        "array_parallelism": max_parallel or 256,
        # SIGUSR2 this long before the time limit: submitit requeues the task, which resumes.
        "signal_delay_s": 120,
    }
    if settings.gpus_per_run:
        parameters["gpus_per_node"] = settings.gpus_per_run
    for key in ("partition", "mem", "account", "qos", "constraint"):
        value = getattr(settings, key)
        if value:
            parameters[key] = value
    if settings.setup:
        parameters["setup"] = list(settings.setup)
    slurm = submitit.SlurmExecutor(folder=plan.sweep_dir / "slurm", max_num_timeout=20)
    slurm.update_parameters(**parameters)
    return slurm


def submit(plan: SweepPlan, runs: Sequence[PlannedRun], force: bool = False,
           max_parallel: Optional[int] = None) -> list[str]:
    """Submit ``runs`` as one job array (at most ``max_parallel`` at once); returns the job ids."""
    check_slurm()
    write_recipe_files(plan)
    slurm = executor(plan, max_parallel)
    task = SweepTask()
    with slurm.batch():
        jobs = [slurm.submit(task, run, force, plan.slurm.gpus_per_run) for run in runs]
    ids = [str(job.job_id) for job in jobs]
    for run, job_id in zip(runs, ids):
        update_marker(run.run_dir, launcher="slurm", state="queued", job_id=job_id, error=None)
    return ids
