"""`accvit-med sweep` with the local launcher: the plan's checks, --dry-run, a run killed mid-way
and resumed, one run per GPU slot, skip / leave-alone on re-runs, and --status against the run
files (scikit-learn's macro-F1 on predictions_test.csv, the minimum of history.csv)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner, Result

from accvit_med.cli import app
from accvit_med.datasets.create_split import create_split
from accvit_med.datasets.synthetic import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
# A sitecustomize that slows each optimizer step when STEP_DELAY_ENV is set (test support only).
SLOW_STEPS = ROOT / "tests" / "support" / "slow_steps"
STEP_DELAY_ENV = "ACCVIT_MED_TEST_STEP_DELAY"
runner = CliRunner()
PLAN = """
datasets = ["folder"]
models = ["accvit_femto"]
seeds = [0, 1]
out = "runs"
[recipe]
epochs = 2
weights = "none"
batch_size = 4
workers = 0
lr = {lr}
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    make_image_folder(root / "images", classes=("a", "b"), per_class=6, size=(36, 36), seed=3)
    create_split("folder", root / "images", root / "splits" / "folder.csv", seed=0, grouped=False, progress=False)
    (root / "plan.toml").write_text(PLAN.format(lr=1e-3))
    return root


def _invoke(cwd: Path, args) -> Result:
    """`accvit-med sweep ARGS` in this process, run in ``cwd`` (the finetune runs are still subprocesses)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(app, ["sweep", *map(str, args)])
    finally:
        os.chdir(old)


def _sweep(work: Path, *args: str) -> Result:
    result = _invoke(work, ["plan.toml", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_line_error(args, cwd: Path) -> str:
    result = _invoke(cwd, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accvit-med: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("change, expected", [
    (('"accvit_femto"]', '"accvit_femto", "resnet9000"]'), "unknown model 'resnet9000'"),
    (('datasets = ["folder"]', 'datasets = ["folder", "busi"]'),
     "split file 'splits/busi.csv' for data set 'busi' does not exist"),
    (("lr = ", "learning_rate = "), "unknown recipe key 'learning_rate'"),
    (("lr = ", "seed = 3\nlr = "), "sets 'seed', which the grid sets"),
    (("lr = 0.001", "lr = 0.001\n[recipe.busi]\nepochs = 3"), "[recipe.busi] but 'busi' is not in datasets"),
    (("lr = 0.001", "lr = -1.0"), "--lr must be positive"),
    (("lr = 0.001", 'lr = 0.001\n[slurm]\ngpus = 2'), "[slurm] has unknown key 'gpus'"),
    (("lr = 0.001", 'lr = 0.001\n[slurm]\ntime = "soon"'), "is not a SLURM time"),
    (("seeds = [0, 1]", "seeds = [0, 0]"), "lists the same entry twice in seeds"),
])
def test_plan_mistakes_are_one_line_before_anything_is_written(work, tmp_path, change, expected):
    bad = tmp_path / "bad.toml"
    text = (work / "plan.toml").read_text()
    assert change[0] in text
    bad.write_text(text.replace(change[0], change[1]).replace('out = "runs"', f'out = "{tmp_path / "out"}"'))
    assert expected in one_line_error([bad], work)
    assert not (tmp_path / "out").exists()


def test_cli_option_mistakes(work, tmp_path, monkeypatch):
    assert "--gpus must list distinct GPU numbers" in one_line_error([work / "plan.toml", "--gpus", "0,0"], work)
    assert "does not exist" in one_line_error([tmp_path / "nope.toml"], work)
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without sbatch
    message = one_line_error([work / "plan.toml", "--launcher", "slurm"], work)
    assert "--launcher slurm needs SLURM's sbatch" in message and "--launcher local" in message


def test_dry_run_prints_each_command_and_writes_nothing(work):
    result = _sweep(work, "--dry-run")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        run = work / "runs" / "folder" / "accvit_femto" / f"seed{seed}"
        assert f"folder/accvit_femto/seed{seed}: start" in result.stdout
        assert (f"-m accvit_med finetune --config {work / 'runs' / '.sweep' / 'recipes' / 'folder.json'} "
                f"--model accvit_femto --seed {seed} --out {run}") in result.stdout
    assert "2 of 2 run(s) to start or resume (dry run: nothing started)" in result.stdout
    assert not (work / "runs").exists()


# Run in fresh interpreters: the sweep's own process and the submitit worker that unpickles a
# SweepTask and its PlannedRun only read files and start finetune subprocesses, so they must not pay
# for importing torch.
NO_TORCH_PROBE = """
import pickle, sys
import accvit_med.cli.commands.sweep, accvit_med.sweep.launch, accvit_med.sweep.state
from accvit_med.errors import UserError
from accvit_med.sweep import load_plan, run_states
from accvit_med.sweep.slurm import SweepTask

plan = load_plan(sys.argv[1])
print(len(plan.runs), len(run_states(plan)))
try:
    load_plan(sys.argv[2])
except UserError as err:
    print(err)
with open(sys.argv[3], "wb") as handle:
    pickle.dump((SweepTask(), plan.runs[0]), handle)
print(sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""
WORKER_PROBE = """
import pickle, sys
with open(sys.argv[1], "rb") as handle:
    task, run = pickle.load(handle)
print(type(task).__name__, run.name, sorted(m for m in ("torch", "torchvision") if m in sys.modules))
"""


def test_plan_checks_status_and_slurm_task_do_not_import_torch(work, tmp_path):
    # Every kind of model check: an ACC-ViT inheriting from MaxViT-T (the imagenet default), baselines
    # with torchvision ImageNet weights, the fixed-size MaxViT; then a model too wide to inherit.
    splits = f'[splits]\nfolder = "{work / "splits" / "folder.csv"}"\n'
    good = (work / "plan.toml").read_text().replace('"accvit_femto"]', '"accvit_tiny", "convnext_tiny", "maxvit_t"]')
    good = good.replace('weights = "none"', 'weights = "imagenet"')
    good = good.replace('out = "runs"', f'out = "{tmp_path / "out"}"')
    (tmp_path / "good.toml").write_text(good + splits)
    (tmp_path / "wide.toml").write_text(good.replace('"accvit_tiny",', '"accvit_small",') + splits)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    task = tmp_path / "task.pkl"
    probe = [sys.executable, "-c", NO_TORCH_PROBE, tmp_path / "good.toml", tmp_path / "wide.toml", task]
    result = subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    counts, wide_error, imported = result.stdout.strip().splitlines()
    assert counts == "6 6"
    assert "accvit_small is wider than MaxViT-T" in wide_error
    assert imported == "[]"
    worker = subprocess.run([sys.executable, "-c", WORKER_PROBE, task], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.strip() == "SweepTask folder/accvit_tiny/seed0 []"
    assert not (tmp_path / "out").exists()


def _env(delay: float | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SLOW_STEPS)]), "OMP_NUM_THREADS": "1"}
    env.pop(STEP_DELAY_ENV, None)
    if delay:
        env[STEP_DELAY_ENV] = str(delay)
    return env


def _epochs(run: Path) -> list[int]:
    if not (run / "history.csv").is_file():
        return []
    with open(run / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _status(work: Path) -> dict[str, list[str]]:
    result = _sweep(work, "--status")
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0].startswith("folder/"):
            rows[cells[0]] = cells
    return rows


def test_killed_sweep_resumes_and_reruns_skip(work, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the in-process sweeps below choose the threads
    runs = {seed: work / "runs" / "folder" / "accvit_femto" / f"seed{seed}" for seed in (0, 1)}
    # One run at a time, slowed down; kill the sweep and its finetune process after seed 0's epoch 1.
    sweep = subprocess.Popen([sys.executable, "-m", "accvit_med", "sweep", "plan.toml"], cwd=work,
                             env=_env(delay=1.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    while len(_epochs(runs[0])) < 1:
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.3)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert _epochs(runs[0]) == [1] and not runs[1].exists()

    status = _status(work)
    assert status["folder/accvit_femto/seed0"][1].startswith("failed: process")
    assert status["folder/accvit_femto/seed0"][2] == "1/2"
    assert status["folder/accvit_femto/seed1"][1] == "pending"

    # Again, one run per GPU slot: the killed run resumes, the missing one starts.
    again = _sweep(work, "--gpus", "0,1")
    assert again.exit_code == 0, again.output
    assert "folder/accvit_femto/seed0: resume after epoch 1" in again.stdout
    assert "folder/accvit_femto/seed1: start" in again.stdout
    slots = set()
    for seed, run in runs.items():
        assert _epochs(run) == [1, 2]
        config = json.loads((run / "config.json").read_text())
        assert config["recipe"]["seed"] == seed and config["recipe"]["lr"] == 1e-3
        slots.add(json.loads((run / "logs" / "sweep.json").read_text())["cuda_visible_devices"])
    assert slots == {"0", "1"}
    # Two runs share the machine's cores: each gets half of them (torch's default: one per core).
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert json.loads((runs[1] / "config.json").read_text())["versions"]["cpu threads"] == threads
    resumed = json.loads((runs[0] / "config.json").read_text())
    assert len(resumed["resumed_by"]) == 1 and "--resume" in resumed["resumed_by"][0]

    # --status against the run's own files, computed independently.
    status = _status(work)
    for seed, run in runs.items():
        row = status[f"folder/accvit_femto/seed{seed}"]
        with open(run / "predictions_test.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        f1 = f1_score([r["label"] for r in rows], [r["pred"] for r in rows], average="macro", zero_division=0)
        with open(run / "history.csv", newline="") as handle:
            best = min(float(r["val_loss"]) for r in csv.DictReader(handle))
        assert row[1] == "done" and row[2] == "2/2" and row[5] == "–"
        assert float(row[3]) == pytest.approx(best, abs=1e-4) and float(row[4]) == pytest.approx(f1, abs=1e-4)

    # A re-run does nothing; a changed recipe is reported and left alone.
    stamps = {seed: (run / "metrics.json").stat().st_mtime_ns for seed, run in runs.items()}
    assert "0 of 2 run(s) to do: nothing" in _sweep(work).stdout
    (work / "plan.toml").write_text(PLAN.format(lr=2e-3))
    changed = _sweep(work)
    assert changed.exit_code == 0, changed.output
    assert changed.stdout.count("recipe differs, left alone") == 2
    assert "lr: 0.001 in the run, 0.002 in the plan" in changed.stdout
    assert {seed: (run / "metrics.json").stat().st_mtime_ns for seed, run in runs.items()} == stamps
    dry = _sweep(work, "--dry-run", "--force")
    assert dry.stdout.count("start again (--force)") == 2 and dry.stdout.count(" --force") >= 2
    (work / "plan.toml").write_text(PLAN.format(lr=1e-3))
