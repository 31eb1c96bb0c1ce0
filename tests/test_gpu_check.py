"""benchmarks/gpu_check.py, the one command a GPU session runs: what it would run (--dry-run), its
refusal without CUDA, its budget enforcement, and its CPU piece (the inheritance benchmark at its
smallest size) end to end, so the script is known to work before GPU time is spent on it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_dry_run_lists_every_piece_with_its_budget_and_commands(gpu_check):
    done = _run("--dry-run", env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    budgets = {p.name: p.budget_s for p in gpu_check.PIECES}
    assert sum(budgets.values()) <= 8 * 60
    for name, budget in budgets.items():
        assert f"{name}  (budget {budget} s)" in out
    commands = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    pytest_cmd = [c for c in commands if "pytest" in c]
    assert pytest_cmd and pytest_cmd[0].endswith("-rs -p no:cacheprovider tests/test_cuda.py")
    bench = [c for c in commands if " benchmark " in c]
    assert len(bench) == 2 and sum("--compile" in c for c in bench) == 1
    for command in bench:
        assert "--device cuda" in command and "--batch-size 64" in command
        assert "--models accvit_tiny,maxvit_t,swin_t,convnext_tiny" in command
    finetunes = [c for c in commands if " finetune " in c]
    assert len(finetunes) == 2 and finetunes[1] == finetunes[0] + " --resume" and "--amp" in finetunes[0]
    assert any(" sweep " in c and c.endswith("--gpus 0") for c in commands)
    inheritance = [c for c in commands if "bench_inheritance.py" in c]
    assert len(inheritance) == 1 and "--device cuda" in inheritance[0] and "--seeds 0,1,2" in inheritance[0]


def test_without_cuda_it_stops_with_one_line_and_exit_2(tmp_path):
    done = _run("--out", str(tmp_path / "check"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA device is visible" in done.stderr
    assert not (tmp_path / "check").exists()


def test_a_piece_past_its_budget_is_killed_and_the_next_one_runs(gpu_check, tmp_path):
    def sleeper(ctx):
        ctx.run([sys.executable, "-c", "import time; time.sleep(60)"])
        return True, {}, []

    def quick(ctx):
        code, output = ctx.run([sys.executable, "-c", "print('quick ran')"])
        return code == 0, {"output": output}, []

    (tmp_path / "logs").mkdir()
    context = gpu_check.Context(out=tmp_path, dry_run=False, smoke=False)
    records = gpu_check.run_pieces(context, [gpu_check.Piece("slow", 1, sleeper), gpu_check.Piece("quick", 30, quick)])
    assert records[0]["status"] == "overran its budget of 1 s (killed)" and records[0]["seconds"] < 30
    assert records[1]["status"] == "ok" and "quick ran" in records[1]["result"]["output"]


def test_smoke_run_writes_the_summary_and_the_inheritance_results(tmp_path):
    out = tmp_path / "check"
    done = _run("--smoke", "--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    pieces = {p["name"]: p for p in report["pieces"]}
    assert pieces["inheritance"]["status"] == "ok"
    assert all(p["status"].startswith("not run") for name, p in pieces.items() if name != "inheritance")
    result = pieces["inheritance"]["result"]
    assert len(result["teacher_accuracy"]) == 1 and 0 <= result["teacher_accuracy"][0] <= 100
    (seed,) = result["results"]
    assert set(seed["task_b"]) == {"inherited", "random"} and all(len(c) == 1 for c in seed["task_b"].values())
    names = list(seed["task_a"])
    assert names[0] == "maxvit_t teacher (trained)" and len(names) == 4
    summary = (out / "summary.md").read_text()
    assert "## inheritance" in summary and "teacher (MaxViT-T from scratch) test accuracy" in summary
    assert "| task A | test accuracy % | test macro-F1 % |" in summary
    assert (out / "logs" / "inheritance.log").stat().st_size > 0
