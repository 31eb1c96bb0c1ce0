"""Everything to check on a GPU machine, in one command of at most 8 minutes on one H200.

GPU time comes rarely and in minutes, so what a GPU session must check is ready here, each piece
with its own time budget (the pieces and budgets: ``--dry-run``):

1. ``cuda-tests``: ``pytest -rs tests/test_cuda.py`` (its result lines).
2. ``benchmark-eager`` / ``benchmark-compile``: ``accvit-med benchmark --device cuda`` for
   accvit_tiny, maxvit_t, swin_t and convnext_tiny at batch 64, eager and ``--compile``
   (training and inference images/s, peak memory).
3. ``finetune-resume``: a fine-tune with ``--amp`` on CUDA, SIGKILLed once its first epoch is in
   history.csv, resumed at once; every epoch must be in history.csv once.
   ``sweep``: ``accvit-med sweep --gpus 0`` over two tiny runs.
4. ``inheritance``: benchmarks/bench_inheritance.py at GPU scale: the MaxViT-T teacher's accuracy
   on task A first, then inherited vs random ACC-ViT-T with no training, after distillation, and
   fine-tuned on task B (macro-F1 per epoch), three seeds.

Each piece runs in child processes under its budget: one that overruns is killed, recorded as
such, and the next piece starts. Results: ``--out DIR`` gets ``summary.md`` (for
docs/performance.md and docs/pretrained-weights.md), ``gpu_check.json`` and ``logs/<piece>.log``.

    .venv/bin/python benchmarks/gpu_check.py --out gpu-check      # after `make install`
    .venv/bin/python benchmarks/gpu_check.py --dry-run            # what it would run, no CUDA needed
    .venv/bin/python benchmarks/gpu_check.py --smoke --out DIR    # the script itself, on the CPU

Without a visible CUDA device it stops at once: one line on stderr, exit code 2. ``--smoke`` runs
only the pieces that can run on the CPU (the inheritance benchmark at its smallest size), so the
tests can check the script without a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 480
BENCH_MODELS = "accvit_tiny,maxvit_t,swin_t,convnext_tiny"
# The inheritance benchmark at GPU scale (a teacher that learns task A) and at its smallest (CPU).
INHERITANCE_GPU = ["--device", "cuda", "--per-class", "200", "--teacher-epochs", "20", "--teacher-target", "95",
                   "--distill-epochs", "2", "--epochs", "5", "--batch-size", "32", "--seeds", "0,1,2"]
INHERITANCE_SMOKE = ["--device", "cpu", "--per-class", "2", "--teacher-epochs", "1", "--distill-epochs", "1",
                     "--epochs", "1", "--batch-size", "6", "--student", "accvit_femto", "--seeds", "0"]


class Overrun(Exception):
    """A piece ran past its budget; its child process group was killed."""


@dataclass
class Context:
    out: Path
    dry_run: bool
    smoke: bool
    log: Path | None = None
    deadline: float = 0.0
    commands: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "accvit_med", *args]

    def _timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Overrun
        return left

    def start(self, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen | None:
        """Start ``cmd`` (its output appended to the piece's log); None in a dry run."""
        self.commands.append(shlex.join(map(str, cmd)))
        if self.dry_run:
            return None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "a", encoding="utf-8") as handle:  # the child keeps its own copy of the file
            handle.write(f"$ {shlex.join(map(str, cmd))}\n")
            handle.flush()
            return subprocess.Popen(list(map(str, cmd)), cwd=cwd or REPO, stdout=handle, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)

    def wait(self, process: subprocess.Popen | None) -> int:
        if process is None:
            return 0
        try:
            return process.wait(timeout=self._timeout())
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise Overrun from None

    def run(self, cmd: list[str], cwd: Path | None = None) -> tuple[int, str]:
        """Run ``cmd`` to its end within the budget; (exit code, the output it added to the log)."""
        before = self.log.stat().st_size if self.log is not None and self.log.exists() else 0
        code = self.wait(self.start(cmd, cwd))
        if self.dry_run:
            return 0, ""
        with open(self.log, encoding="utf-8", errors="replace") as handle:
            handle.seek(before)
            return code, handle.read()


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# ---- the pieces: each returns (ok, result dict, Markdown lines) ------------------------------------

def cuda_tests(ctx: Context):
    code, output = ctx.run([sys.executable, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
                            "tests/test_cuda.py"])
    outcome, summary = r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", r"=+ .* in [\d.]+s"
    lines = [line for line in output.splitlines() if re.search(outcome, line) or re.match(summary, line)]
    return code == 0, {"exit_code": code, "lines": lines}, ["```", *lines, "```"]


def _benchmark(compiled: bool):
    def piece(ctx: Context):
        cmd = ctx.cli("benchmark", "--device", "cuda", "--models", BENCH_MODELS, "--batch-size", "64",
                      "--iters", "5", "--warmup", "2", *(["--compile"] if compiled else []))
        code, output = ctx.run(cmd)
        table = [line for line in output.splitlines() if line.strip() and not line.startswith("$")]
        return code == 0, {"exit_code": code, "output": table}, ["```", *table[-30:], "```"]
    return piece


def _make_split(ctx: Context, per_class: int) -> Path:
    """A synthetic 3-class image folder and its split, under ``--out`` (made once)."""
    split = ctx.out / "data" / "split.csv"
    if not ctx.dry_run and not split.exists():
        from accvit_med.datasets.create_split import create_split
        from accvit_med.datasets.synthetic import make_image_folder

        make_image_folder(ctx.out / "data" / "images", classes=("a", "b", "c"), per_class=per_class, size=(64, 64),
                          seed=0)
        create_split("folder", ctx.out / "data" / "images", split, seed=0, grouped=False, progress=False)
    return split


def _history_epochs(run: Path) -> list[int]:
    try:
        lines = (run / "history.csv").read_text(encoding="utf-8").splitlines()[1:]
    except OSError:
        return []
    return [int(line.split(",")[0]) for line in lines if line.strip()]


def finetune_resume(ctx: Context):
    split, run, epochs = _make_split(ctx, per_class=150), ctx.out / "finetune-run", 6
    args = ["finetune", "--split", split, "--model", "accvit_tiny", "--weights", "none", "--epochs", str(epochs),
            "--batch-size", "32", "--workers", "4", "--amp", "--device", "cuda", "--out", run]
    first = ctx.start(ctx.cli(*args))
    killed_after = None
    if first is not None:
        while first.poll() is None and not _history_epochs(run):
            if time.monotonic() > ctx.deadline:
                kill_group(first)
                raise Overrun
            time.sleep(0.05)
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)  # the main process only, as the OOM killer would
            first.wait()
            killed_after = _history_epochs(run)
    started = time.monotonic()
    code, output = ctx.run(ctx.cli(*args, "--resume"))
    retried = False
    if code != 0 and "in use by another process" in output:
        retried = True  # the killed run's lock outlived it: record that, and resume once it is free
        time.sleep(10)
        code, output = ctx.run(ctx.cli(*args, "--resume"))
    history = _history_epochs(run) if not ctx.dry_run else list(range(1, epochs + 1))
    ok = code == 0 and history == list(range(1, epochs + 1)) and not retried
    result = {"exit_code": code, "killed_with_epochs_done": killed_after, "resume_refused_at_once": retried,
              "resume_seconds": round(time.monotonic() - started, 1), "history_epochs": history}
    kill = (f"- killed (SIGKILL, main process) with epochs {killed_after} in history.csv"
            if killed_after is not None else "- the first run ended before it could be killed")
    how = "was refused at once (lock still held), then run 10 s later" if retried else "started at once"
    lines = [kill, f"- `--resume` {how}; exit {code}; history.csv epochs {history}"]
    return ok, result, lines


SWEEP_PLAN = """\
datasets = ["folder"]
models = ["accvit_femto"]
seeds = [0, 1]
out = "sweep-runs"
[splits]
folder = "{split}"
[recipe]
epochs = 1
weights = "none"
batch_size = 32
workers = 2
amp = true
"""


def sweep(ctx: Context):
    split = _make_split(ctx, per_class=150)
    plan = ctx.out / "sweep-plan.toml"
    if not ctx.dry_run:
        plan.write_text(SWEEP_PLAN.format(split=split.resolve()), encoding="utf-8")
    code, _ = ctx.run(ctx.cli("sweep", plan, "--gpus", "0"), cwd=ctx.out)
    _, status = ctx.run(ctx.cli("sweep", plan, "--status"), cwd=ctx.out)
    done = sorted(str(p.parent.relative_to(ctx.out)) for p in (ctx.out / "sweep-runs").rglob("metrics.json"))
    ok = code == 0 and (ctx.dry_run or len(done) == 2)
    status_lines = [line for line in status.splitlines() if line.strip() and not line.startswith("$")]
    return ok, {"exit_code": code, "finished_runs": done, "status": status_lines}, \
        [f"- exit {code}; finished runs: {', '.join(done) or 'none'}", "```", *status_lines[-10:], "```"]


def inheritance(ctx: Context):
    result_file = ctx.out / "inheritance.json"
    settings = INHERITANCE_SMOKE if ctx.smoke else INHERITANCE_GPU
    code, _ = ctx.run([sys.executable, str(REPO / "benchmarks" / "bench_inheritance.py"), *settings,
                       "--json", result_file])
    if ctx.dry_run or code != 0 or not result_file.exists():
        return code == 0, {"exit_code": code}, [f"- exit {code}"]
    data = json.loads(result_file.read_text(encoding="utf-8"))
    teacher = [r["task_a"]["maxvit_t teacher (trained)"]["accuracy"] for r in data["results"]]
    learnt = min(teacher) >= 80.0
    verdict = "" if learnt else " -- the teacher did not learn task A: the rows below say nothing about inheritance"
    accuracies = ", ".join(f"{a:.1f}%" for a in teacher)
    lines = [f"- teacher (MaxViT-T from scratch) test accuracy on task A per seed: {accuracies} "
             f"(chance 33.3%){verdict}",
             "", data["markdown"]]
    return code == 0, {"exit_code": code, "teacher_accuracy": teacher, "teacher_learnt": learnt,
                       "results": data["results"], "settings": data["settings"]}, lines


@dataclass(frozen=True)
class Piece:
    name: str
    budget_s: int
    run: Callable[[Context], tuple]
    cpu_ok: bool = False  # runs under --smoke


PIECES = (
    Piece("cuda-tests", 70, cuda_tests),
    Piece("benchmark-eager", 40, _benchmark(compiled=False)),
    Piece("benchmark-compile", 120, _benchmark(compiled=True)),
    Piece("finetune-resume", 50, finetune_resume),
    Piece("sweep", 40, sweep),
    Piece("inheritance", 150, inheritance, cpu_ok=True),
)
assert sum(p.budget_s for p in PIECES) <= TOTAL_BUDGET_S


def run_pieces(ctx: Context, pieces) -> list[dict]:
    records = []
    for piece in pieces:
        ctx.commands = []
        ctx.log = ctx.out / "logs" / f"{piece.name}.log"
        started = time.monotonic()
        ctx.deadline = started + piece.budget_s
        if ctx.dry_run:
            piece.run(ctx)
            print(f"{piece.name}  (budget {piece.budget_s} s)")
            for command in ctx.commands:
                print(f"    {command}")
            continue
        if ctx.smoke and not piece.cpu_ok:
            records.append({"name": piece.name, "budget_s": piece.budget_s, "status": "not run (--smoke: needs CUDA)",
                            "seconds": 0.0, "commands": [], "result": {}, "markdown": []})
            continue
        print(f"[{piece.name}] budget {piece.budget_s} s", flush=True)
        try:
            ok, result, markdown = piece.run(ctx)
            status = "ok" if ok else "failed"
        except Overrun:
            status, result, markdown = f"overran its budget of {piece.budget_s} s (killed)", {}, []
        except Exception as err:  # noqa: BLE001 -- one piece's crash must not stop the others
            status, result, markdown = f"error: {type(err).__name__}: {err}", {}, []
        seconds = round(time.monotonic() - started, 1)
        print(f"[{piece.name}] {status} ({seconds} s)", flush=True)
        records.append({"name": piece.name, "budget_s": piece.budget_s, "status": status, "seconds": seconds,
                        "commands": ctx.commands, "log": f"logs/{piece.name}.log", "result": result,
                        "markdown": markdown})
    return records


def summary_markdown(records: list[dict], device: str, started: str, smoke: bool) -> str:
    total = sum(r["seconds"] for r in records)
    lines = [f"# GPU check{' (smoke run on the CPU)' if smoke else ''}", "",
             f"{started}, {device}; {total:.0f} s of the {TOTAL_BUDGET_S} s budget.", "",
             "| piece | status | seconds (budget) |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']:.0f} ({r['budget_s']}) |" for r in records]
    for record in records:
        lines += ["", f"## {record['name']}", ""]
        lines += [f"`{c}`" + "  " for c in record["commands"]]
        lines += ["", *record["markdown"]]
    return "\n".join(lines) + "\n"


def device_line() -> str:
    import torch

    if not torch.cuda.is_available():
        return ""
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        help="folder for summary.md, gpu_check.json and logs/ (required unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="print the pieces, budgets and commands; run nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="run the CPU pieces at their smallest size (tests the script)")
    parser.add_argument("--only", action="append", choices=[p.name for p in PIECES],
                        help="run this piece (repeatable)")
    args = parser.parse_args(argv)
    pieces = [p for p in PIECES if not args.only or p.name in args.only]
    if args.dry_run:
        print(f"gpu_check: {len(pieces)} pieces, {sum(p.budget_s for p in pieces)} s of budgets "
              f"(at most {TOTAL_BUDGET_S} s in all); commands as they would run (OUT = --out):")
        run_pieces(Context(out=args.out or Path("OUT"), dry_run=True, smoke=args.smoke), pieces)
        return 0
    if args.out is None:
        print("gpu_check: error: --out DIR is required (the folder for summary.md and gpu_check.json)", file=sys.stderr)
        return 2
    device = device_line()
    if not device and not args.smoke:
        print("gpu_check: error: no CUDA device is visible (torch.cuda.is_available() is False); run it on a GPU "
              "machine, or see what it would run with --dry-run", file=sys.stderr)
        return 2
    args.out = args.out.resolve()  # the sweep runs in it, the other pieces in the repository
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    records = run_pieces(Context(out=args.out, dry_run=False, smoke=args.smoke), pieces)
    device = device or "CPU (smoke run)"
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"started": started, "device": device, "total_budget_s": TOTAL_BUDGET_S, "smoke": args.smoke,
         "pieces": [{k: v for k, v in r.items() if k != "markdown"} for r in records]}, indent=2), encoding="utf-8")
    (args.out / "summary.md").write_text(summary_markdown(records, device, started, args.smoke), encoding="utf-8")
    print(f"wrote {args.out / 'summary.md'} and {args.out / 'gpu_check.json'}")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("not run") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
