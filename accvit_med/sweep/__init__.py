"""``accvit-med sweep``: a grid of ordinary fine-tuning runs (data sets x models x seeds) from one
plan file, run here one at a time, one per GPU, or on SLURM through submitit.

A notebook can use it as the CLI does::

    from accvit_med.sweep import load_plan, run_states
    from accvit_med.sweep.launch import run_local

    plan = load_plan("table1.toml")
    pending = [s.run for s in run_states(plan) if s.state in ("pending", "failed")]
    failed = run_local(plan, pending)  # how many runs failed
"""

from accvit_med.sweep.plan import PlannedRun, SweepPlan, load_plan
from accvit_med.sweep.state import RunState, run_states

__all__ = ["PlannedRun", "SweepPlan", "load_plan", "RunState", "run_states"]
