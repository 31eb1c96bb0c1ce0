"""The run directory's lock: held by the process that took it and by no other, forked children
included, so a run killed with SIGKILL is free to resume at once; a live holder is named.

Each holder is a real separate process; the test process plays the second trainer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from accvit_med.errors import UserError
from accvit_med.rundir.claim import LOCK_NAME, check_unlocked, lock_run_dir, release_run_dir

ROOT = Path(__file__).resolve().parents[1]
# Takes the lock, then forks a child that either lives on holding every inherited descriptor
# ("child-lives") or closes the lock file's descriptor and exits ("child-closes"), as DataLoader
# workers do; prints "<child pid>" when done, then sleeps.
HOLDER = textwrap.dedent("""
    import os, sys, time
    from accvit_med.rundir.claim import lock_run_dir
    run, mode = sys.argv[1], sys.argv[2]
    lock_run_dir(run)
    child = os.fork()
    if child == 0:
        if mode == "child-closes":
            for fd in range(3, 256):
                try:
                    os.close(fd)
                except OSError:
                    pass
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    if mode == "child-closes":
        os.waitpid(child, 0)
    print(child, flush=True)
    time.sleep(60)
""")


def _hold(run: Path, mode: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), mode], stdout=subprocess.PIPE, text=True,
                              env=env)
    line = holder.stdout.readline().strip()
    assert line.isdigit(), f"holder failed (rc {holder.poll()})"
    return holder, int(line)


def _refused_by(run: Path, pid: int) -> None:
    for attempt in (check_unlocked, lock_run_dir):
        with pytest.raises(UserError, match=rf"'{run}' is in use by another process \(pid {pid}\)"):
            attempt(run)


def _end(process: subprocess.Popen, *pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.kill()
    process.wait()


def test_a_second_live_process_is_refused_and_a_dead_ones_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder, child = _hold(run, "child-closes")
    try:
        # the child closed its copy of the lock file's descriptor and exited: the holder keeps the lock
        _refused_by(run, holder.pid)
    finally:
        _end(holder)
    check_unlocked(run)  # stale now
    lock_run_dir(run)
    try:
        assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    finally:
        release_run_dir(run)


def test_a_forked_child_does_not_hold_the_lock_once_its_parent_is_killed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder, child = _hold(run, "child-lives")
    try:
        _refused_by(run, holder.pid)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # alive, with every descriptor its parent had
        lock_run_dir(run)  # at once
        release_run_dir(run)
    finally:
        _end(holder, child)


def test_probing_the_lock_this_process_holds_keeps_it(tmp_path):
    """A record lock drops when its process closes any descriptor of the file: the probes must not open it."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "alias").symlink_to(run)
    lock_run_dir(run)
    try:
        check_unlocked(run)
        check_unlocked(tmp_path / "alias")
        lock_run_dir(tmp_path / "alias")
        probe = subprocess.run([sys.executable, "-c", "import sys; from accvit_med.rundir.claim import check_unlocked; "
                                "from pathlib import Path; check_unlocked(Path(sys.argv[1]))", str(run)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert probe.returncode != 0 and f"in use by another process (pid {os.getpid()})" in probe.stderr
    finally:
        release_run_dir(run)
