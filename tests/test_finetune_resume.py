"""Interruptions: SIGKILL mid-epoch then --resume ends exactly like an uninterrupted run, and can
start at once while the killed run's DataLoader workers are still alive; Ctrl-C saves state and
exits 130. Each run is a separate process, as a user's would be."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# The run: a tiny CNN via finetune's model-factory hook, three epochs, RandAugment on, workers=0
# unless a fifth argument says how many.
SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    # Background jobs may inherit SIGINT as ignored; a user's terminal delivers it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from torch import nn
    from accvit_med.training.finetune import finetune
    from accvit_med.training.recipe import FinetuneConfig

    split, out, mode, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    resume = mode in ("resume", "resume-on-cue")
    if mode == "resume-on-cue":  # imports done: resume the moment the test says so
        print("ready", flush=True)
        sys.stdin.readline()

    def slow_down(module, inputs, output):
        # Training batches only: the kill or Ctrl-C then lands reliably inside an epoch.
        if module.training:
            time.sleep(delay)

    def tiny(num_classes):
        model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        if delay:
            model.register_forward_hook(slow_down)
        return model

    config = FinetuneConfig(split=split, model="tiny", weights="none", epochs=3, batch_size=4, lr=3e-3,
                            image_size=32, workers=workers, seed=11)
    try:
        finetune(config, out=out, resume=resume, model_factory=tiny)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.fixture(scope="module")
def setup(make_split, tmp_path_factory):
    split = make_split(("a", "b"), 10, size=(36, 36), seed=3)
    script = tmp_path_factory.mktemp("resume") / "run.py"
    script.write_text(SCRIPT)
    return split, script


def _start(script: Path, split: Path, out: Path, mode: str, delay: float = 0.0, workers: int = 0) -> subprocess.Popen:
    """The run in its own process; ``delay`` seconds of sleep after each training batch's forward."""
    return subprocess.Popen([sys.executable, str(script), str(split), str(out), mode, str(delay), str(workers)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs_done(out: Path) -> int:
    history = out / "history.csv"
    if not history.is_file():
        return 0
    with open(history, newline="") as handle:
        return len(list(csv.DictReader(handle)))


def _wait_for_epochs(process: subprocess.Popen, out: Path, epochs: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _epochs_done(out) < epochs:
        if process.poll() is not None:
            pytest.fail(f"run ended early (rc {process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("run did not reach the epoch in time")
        time.sleep(0.05)


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(setup, tmp_path):
    split, script = setup

    reference = _start(script, split, tmp_path / "reference", "new")
    out = tmp_path / "killed"
    # 0.3 s per batch (12 train images, 3 batches): the kill lands inside epoch 2.
    victim = _start(script, split, out, "new", delay=0.3)
    _wait_for_epochs(victim, out, 1)
    time.sleep(0.4)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert _epochs_done(out) == 1
    assert not (out / "metrics.json").exists()

    resumed = _start(script, split, out, "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    with open(out / "history.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    reference_metrics = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text()) == reference_metrics
    for name in ("predictions_val.csv", "predictions_test.csv"):
        assert (out / name).read_text() == (tmp_path / "reference" / name).read_text()


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc; zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the DataLoader workers from /proc (Linux)")
def test_resume_right_after_sigkill_while_the_workers_live(setup, tmp_path):
    """The killed run's forked DataLoader workers outlive it by seconds; they must not hold its lock."""
    split, script = setup
    out = tmp_path / "killed"
    victim = _start(script, split, out, "new", delay=0.3, workers=2)
    resumed = _start(script, split, out, "resume-on-cue")  # imports torch while the victim trains
    assert resumed.stdout.readline().strip() == "ready", resumed.stderr.read()
    _wait_for_epochs(victim, out, 1)
    deadline = time.monotonic() + 30
    while len(workers := _children(victim.pid)) < 2:  # epoch 2's loader has started its workers
        assert time.monotonic() < deadline and victim.poll() is None, "the run started no DataLoader workers"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed = time.monotonic()
    assert _epochs_done(out) == 1 and not (out / "metrics.json").exists()
    resumed.stdin.write("go\n")
    resumed.stdin.flush()
    assert time.monotonic() - killed < 1.0
    # Workers see their parent gone only when their queue has been idle for 5 s (torch's check).
    assert any(_alive(pid) for pid in workers), "the workers ended before the resume started; the test proves nothing"
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert _epochs_done(out) == 3
    with open(out / "history.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]


def test_ctrl_c_keeps_last_checkpoint_and_exits_130(setup, tmp_path):
    split, script = setup
    out = tmp_path / "interrupted"
    process = _start(script, split, out, "new", delay=0.3)
    _wait_for_epochs(process, out, 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "holds epoch 1" in stderr and "--resume" in stderr
    import torch

    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
