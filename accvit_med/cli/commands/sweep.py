"""``accvit-med sweep``: a grid of finetune runs (data sets x models x seeds) from a TOML plan."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)


def sweep(
    plan_file: Path = typer.Argument(
        ..., metavar="PLAN.toml", help="The plan: datasets, models, seeds, out, [recipe], [slurm]."),
    launcher: str = typer.Option(
        "local", "--launcher", help="local (this machine) or slurm (a job array via submitit)."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="local: one run per GPU at once, e.g. 0,1,2,3.",
                                      show_default="one run at a time"),
    max_parallel: Optional[int] = typer.Option(
        None, "--max-parallel", help="slurm: at most this many array tasks at once (the % limit)."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print each run, what would happen to it and its command; start nothing."),
    status: bool = typer.Option(
        False, "--status", help="Print each run's state, last epoch, best val loss, test macro-F1 and job id."),
    force: bool = typer.Option(False, "--force", help="Start again the runs whose recipe differs from the plan's."),
    wait: bool = typer.Option(False, "--wait", help="slurm: return only when no run of the plan is queued or running."),
    track: Optional[str] = typer.Option(
        None, "--track", help="Every run also logs to tensorboard or mlflow (one MLflow experiment per plan)."),
) -> None:
    """Run every data set x model x seed of a plan as an ordinary finetune run.

    Re-running a plan skips finished runs, resumes unfinished ones from checkpoints/last.pt and
    starts missing ones; a run whose recipe differs from the plan's is left alone unless --force.
    See docs/sweep.md.

    Examples:

      accvit-med sweep table1.toml --dry-run

      accvit-med sweep table1.toml --gpus 0,1,2,3

      accvit-med sweep table1.toml --launcher slurm --max-parallel 8

      accvit-med sweep table1.toml --status
    """
    from accvit_med.errors import UserError
    from accvit_med.sweep import load_plan

    if launcher not in ("local", "slurm"):
        raise UserError(f"--launcher must be local or slurm, got '{launcher}'")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel must be at least 1, got {max_parallel}")
    if gpus is not None and launcher != "local":
        raise UserError("--gpus is for --launcher local; on SLURM set gpus_per_run in the plan's [slurm] table")
    gpu_list = _gpu_list(gpus)
    if track is not None:
        from accvit_med.tracking.base import share_tracking

        share_tracking(track, f"accvit-med/sweep/{plan_file.stem}")
    if launcher == "slurm" and not (status or dry_run):
        from accvit_med.sweep.slurm import check_slurm

        check_slurm()  # before the plan's (slower) checks: nothing to do on a machine without SLURM
    plan = load_plan(plan_file)
    if status:
        _print_status(plan)
        return
    from accvit_med.sweep.launch import decide

    decisions = decide(plan, force=force, slurm=launcher == "slurm" or None)
    todo = [d.state.run for d in decisions if d.action != "skip"]
    gpus_per_run = plan.slurm.gpus_per_run if launcher == "slurm" else 1
    for d in decisions:
        typer.echo(f"{d.state.run.name}: {d.why}")
        if dry_run and d.action != "skip":
            command = d.state.run.command(resume=d.action == "resume", force=d.action == "restart", gpus=gpus_per_run)
            typer.echo("  " + shlex.join(command))
    typer.echo(f"{len(todo)} of {len(decisions)} run(s) to {'start or resume' if todo else 'do: nothing'}"
               + (" (dry run: nothing started)" if dry_run else ""))
    if dry_run or not todo and not wait:
        return
    if launcher == "local":
        from accvit_med.sweep.launch import run_local

        failed = run_local(plan, todo, force=force, gpus=gpu_list, echo=typer.echo)
        _print_status(plan)
        if failed:
            raise typer.Exit(code=1)
        return
    from accvit_med.sweep.slurm import submit

    if todo:
        ids = submit(plan, todo, force=force, max_parallel=max_parallel)
        typer.echo(f"submitted {len(ids)} SLURM task(s): {ids[0].split('_')[0]}_[...]; "
                   f"follow with: accvit-med sweep {plan_file} --status")
    if wait:
        failed = _wait(plan)
        if failed:
            raise typer.Exit(code=1)


def _gpu_list(gpus: Optional[str]) -> Optional[list[str]]:
    from accvit_med.errors import UserError

    if gpus is None:
        return None
    items = [g.strip() for g in gpus.split(",") if g.strip()]
    if not items or not all(g.isdigit() for g in items) or len(set(items)) != len(items):
        raise UserError(f"--gpus must list distinct GPU numbers like 0,1,2,3, got '{gpus}'")
    return items


def _print_status(plan) -> None:
    from rich.console import Console
    from rich.table import Table

    from accvit_med.sweep.state import run_states, status_rows

    states = run_states(plan)
    table = Table(title=f"sweep {plan.path}")
    for column in ("run", "state", "epoch", "best val loss", "test macro-F1", "SLURM job"):
        table.add_column(column, no_wrap=column in ("run", "SLURM job"),
                         justify="right" if column in ("epoch", "best val loss", "test macro-F1") else "left")
    for row in status_rows(states):
        table.add_row(*row)
    console = Console(width=max(Console().width, 120))
    console.print(table)
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())), markup=False, highlight=False)


def _wait(plan, poll_s: float = 5.0) -> int:
    """Poll until no run is queued or running; prints progress, returns how many failed."""
    import time

    from accvit_med.sweep.state import run_states

    started, last, done_before = time.monotonic(), None, None
    while True:
        states = run_states(plan, slurm=True)
        done = sum(s.done for s in states)
        active = sum(s.active for s in states)
        done_before = done if done_before is None else done_before
        line = f"waiting: {done}/{len(states)} done, {active} queued or running"
        if done > done_before and active:
            # The rate of runs finished while waiting, over the runs still queued or running.
            rate = (done - done_before) / (time.monotonic() - started)
            line += f", {rate * 3600:.1f} runs/h, ETA {active / rate:.0f} s"
        if line != last:
            typer.echo(line)
            last = line
        if not active:
            _print_status(plan)
            return sum(s.state == "failed" for s in states)
        time.sleep(poll_s)
