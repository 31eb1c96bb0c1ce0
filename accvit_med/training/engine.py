"""The run engine: the scaffolding fine-tuning and pre-training share, written once.

- :class:`~accvit_med.training.context.RunContext`: where a run computes (device, AMP dtype,
  memory format, torchrun process group, console); passed instead of long parameter lists.
- :func:`check_start`, :func:`open_run`, :func:`claim_run`: the resume/force checks before any work,
  the device and process group set up (and torn down), the run directory claimed (ownership
  marker, lock) by rank 0 with its verdict on every rank.
- :class:`RunRecorder`: what a run leaves behind on rank 0: config.json (with versions and the
  command that started it), the epoch-0 checkpoint, ``last.pt``/``best.pt`` and history.csv after
  each epoch, and the one-line messages for an interrupt, a diverged loss or a full disk.

What one epoch does stays with its task (:mod:`.finetune`, :mod:`.pretrain.engine`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from rich.console import Console

from accvit_med.errors import FileSystemError, TrainingDiverged, UserError, file_system_error
from accvit_med.fileio import check_writable
from accvit_med.rundir.checkpoints import checkpoint_kind, load_checkpoint, save_checkpoint
from accvit_med.rundir.claim import check_run_dir, prepare_run_dir, release_run_dir
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord
from accvit_med.training.context import RunContext, amp_dtype_for
from accvit_med.training.distributed import (
    DistContext,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown_distributed,
)
from accvit_med.training.loop import NonFiniteLoss


def rank0_decides(dist: DistContext, action: Callable[[], Any]) -> Any:
    """Run ``action`` on rank 0 and raise its UserError on every rank (no rank is left waiting)."""
    message, value = None, None
    if dist.is_main:
        try:
            value = action()
        except UserError as err:
            message = str(err)
    message = broadcast_object(dist, message)
    if message is not None:
        raise UserError(message)
    return value


def check_start(run: RunDir, resume: bool, force: bool, kind: str) -> Optional[dict]:
    """The resume/force checks before any work; the checkpoint to resume from, or None.

    Args:
        run: the run directory.
        resume, force: what the user asked to do with an existing run.
        kind: ``finetune`` or ``pretrain``: a run of the other kind is not resumed.
    """
    check_writable(run.path)
    check_run_dir(run.path, resume=resume, force=force)
    if not resume:
        return None
    checkpoint = load_checkpoint(run.last)
    found = checkpoint_kind(checkpoint)
    if found != kind:
        raise UserError(f"cannot resume: '{run.path}' holds a {found} run, not a {kind} run; "
                        f"resume it with accvit-med {found}, or choose another --out")
    return checkpoint


@contextlib.contextmanager
def open_run(device: torch.device, console: Console, *, run: Optional[RunDir] = None, amp: bool = False,
             channels_last: bool = False) -> Iterator[RunContext]:
    """Join the process group (under torchrun) and yield the context; undo both after.

    Args:
        device: the resolved ``--device`` (under torchrun, ``cuda`` becomes this rank's GPU).
        console: where progress and messages go (rank 0 prints).
        run: the run directory whose lock (see :func:`claim_run`) is released at the end.
        amp: use autocast where it helps (CUDA).
        channels_last: feed images in channels-last memory format.
    """
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    try:
        yield RunContext(device, dist, console, amp_dtype_for(amp, device), channels_last)
    finally:
        if run is not None:
            release_run_dir(run.path)
        shutdown_distributed(dist)


def claim_run(ctx: RunContext, run: RunDir, resume: bool, force: bool) -> None:
    """Make ``run`` ready (new, replaced or resumed) and lock it; rank 0 decides, every rank hears.

    Called once the inputs are checked, so a mistake in them leaves no folder behind.
    """
    rank0_decides(ctx.dist, lambda: prepare_run_dir(run.path, resume=resume, force=force))


@contextlib.contextmanager
def algorithm_settings(device: torch.device, deterministic_cpu: bool) -> Iterator[None]:
    """cuDNN autotuning on CUDA, optionally deterministic kernels on the CPU; the caller's settings after."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    if device.type == "cpu":
        if deterministic_cpu:
            torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True  # speed first on GPUs; CUDA runs are not bitwise reproducible
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


def run_versions() -> dict[str, str]:
    from accvit_med.env import environment_summary

    return environment_summary()


class RunRecorder:
    """Writes a run's files on rank 0 and keeps every rank in step (a barrier after each write).

    Args:
        run: the run directory.
        ctx: the run's context.
        history_columns: the columns of history.csv.
        history: the completed epochs (from the checkpoint when resuming); rows are appended here.
    """

    def __init__(self, run: RunDir, ctx: RunContext, history_columns: Sequence[str], history: list[dict]):
        self.run = run
        self.ctx = ctx
        self.history_columns = tuple(history_columns)
        self.history = history
        self.kept = len(history)  # epochs in last.pt as it is on disk

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def start(self, record: RunRecord, state: Callable[[], dict[str, Any]], resumed: bool,
              command: Optional[list[str]] = None) -> None:
        """config.json (``record`` with versions and the command), and for a new run the epoch-0
        checkpoint (``state()``, built with :func:`accvit_med.rundir.checkpoints.training_state`): a
        first epoch cut short still leaves something to resume. A resumed run keeps the command that
        started it and lists the others."""
        if self.ctx.is_main:
            command = command if command is not None else list(sys.argv)
            record = dataclasses.replace(record, versions=run_versions(), command=tuple(command))
            if resumed and self.run.config_file.is_file():
                record = record.resumed(self.run.record(), command)
            self.run.write_record(record)
            if not resumed:
                save_checkpoint(self.run.last, state())
                self.run.write_history(self.history, self.history_columns)
        barrier(self.ctx.dist)

    def end_epoch(self, row: dict, state: Callable[[], dict[str, Any]], summary: str,
                  best: Optional[Callable[[], dict[str, Any]]] = None,
                  on_best: Optional[Callable[[], None]] = None) -> None:
        """Append ``row`` to the history; on rank 0 save best.pt (when ``best`` is given, then call
        ``on_best`` for extra files), last.pt and history.csv, and print ``summary``. The state
        callables run on rank 0 only, after ``row`` is in the history."""
        self.history.append(row)
        if self.ctx.is_main:
            if best is not None:
                save_checkpoint(self.run.best, best())
                if on_best is not None:
                    on_best()
            save_checkpoint(self.run.last, state())
            self.kept = len(self.history)
            self.run.write_history(self.history, self.history_columns)
            self.ctx.console.print(summary, soft_wrap=True)
        barrier(self.ctx.dist)

    @contextlib.contextmanager
    def stops(self, lr: float, step_name: str = "step", clip_hint: str = "clip_grad_norm",
              best_epoch: Callable[[], Optional[int]] = lambda: None) -> Iterator[None]:
        """The epochs loop: a non-finite loss and Ctrl-C end it with one line saying what was kept."""
        try:
            yield
        except NonFiniteLoss as err:
            done = self.epochs_done
            kept = f"'{self.run.last}' keeps epoch {done}, the last good one"
            if self.run.best.is_file() and best_epoch() is not None:
                kept += f", '{self.run.best}' epoch {best_epoch()}"
            raise TrainingDiverged(
                f"training diverged: the loss became {err.value} at epoch {done + 1}, {step_name} {err.step}; "
                f"stopped, {kept}; try a lower --lr (now {lr:g}), --no-amp, or gradient clipping ({clip_hint})"
            ) from None
        except OSError as err:
            line = file_system_error(err)
            if line is None:
                raise
            # Checkpoints are written atomically: the one a full disk interrupted is still the last good one.
            raise FileSystemError(f"{line}; '{self.run.last}' keeps epoch {self.kept}, the last good one: "
                                  "continue with the same command plus --resume") from err
        except KeyboardInterrupt:
            if self.ctx.is_main:
                done = self.epochs_done
                self.ctx.console.print(
                    f"[yellow]interrupted during epoch {done + 1}[/]: '{self.run.last}' holds epoch {done}; "
                    "continue with the same command plus --resume",
                    soft_wrap=True,
                )
            raise

