"""`accvit-med sweep --launcher slurm` against a real one-node SLURM cluster on this machine
(scripts/slurm-local.sh): 2 models x 2 seeds of tiny runs as a job array, one task cancelled
mid-run, the plan run again: every run completes, each epoch once in history.csv, the cancelled
run resumed (not restarted).

The cluster needs slurm-wlm and munge installed and root (slurmd starts jobs as the submitting
user). Where either is missing the test is skipped with one line saying so, or fails when
ACCVIT_MED_REQUIRE names slurm (CI installs the packages and runs as root); where the cluster is
possible but does not start, the test fails and says why."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.services import missing_commands, require_service

from accvit_med.datasets.create_split import create_split
from accvit_med.datasets.synthetic import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
# A sitecustomize that slows each optimizer step when STEP_DELAY_ENV is set (test support only).
SLOW_STEPS = ROOT / "tests" / "support" / "slow_steps"
STEP_DELAY_ENV = "ACCVIT_MED_TEST_STEP_DELAY"
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
SLURM_COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scancel", "scontrol", "sinfo", "squeue")
HOW_TO_RUN = "install the slurm-wlm and munge packages, then sudo make test-slurm"
EPOCHS = 2
PLAN = f"""
datasets = ["folder"]
models = ["accvit_femto", "accvit_pico"]
seeds = [0, 1]
out = "runs"
[recipe]
epochs = {EPOCHS}
weights = "none"
batch_size = 4
workers = 0
[slurm]
gpus_per_run = 0
cpus_per_run = 1
time = "00:20:00"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_service("slurm", _slurm_missing(), how=HOW_TO_RUN)
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60)
        pytest.fail(f"could not start a local SLURM cluster with {SCRIPT}: "
                    f"{started.stderr.strip() or started.stdout.strip()}")
    yield folder / "slurm.conf"
    subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60)


def _slurm_missing() -> str | None:
    """Why the local cluster cannot start here, or None."""
    missing = missing_commands(*SLURM_COMMANDS)
    if missing is None and os.geteuid() != 0:
        missing = f"slurmd must run as root to start jobs as the submitting user (this is uid {os.geteuid()})"
    return missing


def _env(conf: Path, delay: float | None) -> dict:
    python_path = os.pathsep.join([str(ROOT), str(SLOW_STEPS)])
    env = {**os.environ, "SLURM_CONF": str(conf), "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
    env.pop(STEP_DELAY_ENV, None)
    if delay:
        env[STEP_DELAY_ENV] = str(delay)  # slows each batch so a task can be cancelled mid-run
    return env


def _sweep(work: Path, env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "accvit_med", "sweep", "plan.toml", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _epochs(run: Path) -> list[int]:
    if not (run / "history.csv").is_file():
        return []
    with open(run / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _squeue(env: dict) -> str:
    return subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], env=env, capture_output=True, text=True).stdout


def test_slurm_sweep_survives_a_cancelled_task(cluster, tmp_path):
    make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=6, size=(36, 36), seed=3)
    create_split("folder", tmp_path / "images", tmp_path / "splits" / "folder.csv", seed=0, grouped=False,
                 progress=False)
    (tmp_path / "plan.toml").write_text(PLAN)
    runs = {f"{m}/seed{s}": tmp_path / "runs" / "folder" / m / f"seed{s}"
            for m in ("accvit_femto", "accvit_pico") for s in (0, 1)}

    submitted = _sweep(tmp_path, _env(cluster, delay=0.5), "--launcher", "slurm", "--max-parallel", "2")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted 4 SLURM task(s)" in submitted.stdout
    job_ids = {name: json.loads((run / "logs" / "sweep.json").read_text())["job_id"] for name, run in runs.items()}
    array = {job.split("_")[0] for job in job_ids.values()}
    assert len(array) == 1, f"one job array for the grid, got {job_ids}"
    # The % limit reached SLURM: the array's pending record carries it.
    listed = subprocess.run(["scontrol", "show", "job", array.pop()], env=_env(cluster, None),
                            capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in listed, listed

    # Cancel the first task that has finished an epoch but not the run.
    deadline, victim = time.monotonic() + 150, None
    while victim is None:
        victim = next((name for name, run in runs.items() if 1 <= len(_epochs(run)) < EPOCHS), None)
        assert time.monotonic() < deadline, f"no run reached epoch 1; queue: {_squeue(_env(cluster, None))}"
        time.sleep(0.2)
    subprocess.run(["scancel", job_ids[victim]], env=_env(cluster, None), check=True)
    while job_ids[victim] in _squeue(_env(cluster, None)):
        time.sleep(0.2)
    killed_at = _epochs(runs[victim])
    assert len(killed_at) < EPOCHS and not (runs[victim] / "metrics.json").exists()

    status = _sweep(tmp_path, _env(cluster, None), "--status")
    assert status.returncode == 0, status.stderr
    line = next(row for row in status.stdout.splitlines() if f"folder/{victim}" in row)
    assert "failed" in line and job_ids[victim] in line, status.stdout

    again = _sweep(tmp_path, _env(cluster, None), "--launcher", "slurm", "--wait", timeout=280)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"folder/{victim}: resume after epoch {len(killed_at)}" in again.stdout
    for name, run in runs.items():
        assert _epochs(run) == list(range(1, EPOCHS + 1)), (name, _epochs(run))
        assert (run / "metrics.json").is_file() and (run / "predictions_test.csv").is_file()
        config = json.loads((run / "config.json").read_text())
        assert config["recipe"]["seed"] == int(name[-1]) and config["model"] == name.split("/")[0]
    resumed = json.loads((runs[victim] / "config.json").read_text())
    assert len(resumed.get("resumed_by", [])) == 1 and "--resume" in resumed["resumed_by"][0]
    assert "--resume" in (runs[victim] / "logs" / "finetune.log").read_text()
    # submitit's per-task logs are kept beside the plan's runs
    assert list((tmp_path / "runs" / ".sweep" / "slurm").glob("*_log.out"))
    final = _sweep(tmp_path, _env(cluster, None), "--launcher", "slurm")
    assert final.returncode == 0 and "0 of 4 run(s)" in final.stdout, final.stdout
