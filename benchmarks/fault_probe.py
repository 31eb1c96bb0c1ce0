"""Plant one-line faults in a copy of the package and check that the tests meant to catch them fail.

Not part of CI (it runs the selected tests once per fault, several minutes on 2 cores). For each
fault: copy ``accvit_med/`` to a temporary folder, replace one line (the original must occur
exactly once, so a moved line is reported instead of silently not planted), and run the fault's
tests against the copy. The temporary folder is pytest's working directory and PYTHONPATH, so both
the test process and the processes the tests start (torchrun, resume scripts) import the faulty
copy; the script checks that before it starts. First the same tests run against the unpatched
copy: they must pass, or a "caught" would mean nothing.

Usage (from the repository root)::

    python benchmarks/fault_probe.py            # every fault
    python benchmarks/fault_probe.py --only resume --only bootstrap-level
    python benchmarks/fault_probe.py --list

Prints a table: fault, tests run, result (caught: a test failed; MISSED: all passed; error:
pytest could not run them, e.g. an import error).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "accvit_med"


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    file: str  # relative to accvit_med/
    original: str
    planted: str
    tests: tuple[str, ...]  # pytest arguments relative to the repository root


FAULTS = (
    # Faults whose outputs still look plausible: only a numeric check catches them.
    Fault("ddp-gather-order", "gathered logits kept in arrival order, not placed by row",
          "training/part_predictions.py", "    ordered[all_rows] = all_logits", "    ordered[:] = all_logits",
          ("tests/test_distributed_finetune.py",)),
    Fault("bootstrap-level", "90% instead of 95% bootstrap intervals",
          "reports/bootstrap.py", "CI_LEVEL = 0.95", "CI_LEVEL = 0.90",
          ("tests/test_metrics.py", "-k", "percentiles")),
    Fault("p-value-one-sided", "one-sided instead of two-sided paired p-value",
          "reports/bootstrap.py", "p_value = float(min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))))",
          "p_value = float(min(1.0, np.mean(diff <= 0)))",
          ("tests/test_metrics.py", "-k", "made_up")),
    Fault("gradcam-no-mean", "gradient x activation instead of Grad-CAM (no spatial mean)",
          "interpret/gradcam.py", "weights = gradients.mean(dim=(2, 3), keepdim=True)", "weights = gradients",
          ("tests/test_gradcam.py", "-k", "varies or class_activation")),
    Fault("resume-forgets-best", "best validation loss forgotten on resume",
          "training/train_state.py", 'self.best_val_loss = float(state["best_val_loss"])',
          "self.best_val_loss = math.inf",
          ("tests/test_finetune.py", "-k", "worse_epoch")),
    Fault("cuda-attention-no-bias", "CUDA attention branch drops the relative-position bias",
          "models/fast/attention.py", "return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)",
          "return F.scaled_dot_product_attention(q, k, v, attn_mask=None)",
          ("tests/test_acc_vit.py", "-k", "window_attention")),
    # Documented promises that no output shows broken (split content, --balance, JPEG draft, atomic writes).
    Fault("split-sha-unchecked", "resume accepts a split whose content changed",
          "training/finetune.py", 'if self.checkpoint["split_sha256"] != self.split.sha256:', "if False:",
          ("tests/test_finetune.py", "-k", "content_changed")),
    Fault("balance-weights-ignored", "--balance weights leaves the loss unweighted",
          "training/data.py",
          'weights = inverse_frequency_weights(train, num_classes) if config.balance == "weights" else None',
          "weights = None", ("tests/test_finetune.py", "-k", "balance_weights_is")),
    Fault("balance-sampler-ignored", "--balance sampler draws a plain permutation",
          "training/finetune.py", 'if config.balance == "sampler" else None)', "if False else None)",
          ("tests/test_finetune.py", "-k", "sampler_draws")),
    Fault("jpeg-no-draft", "JPEGs decoded at full size (no draft mode)",
          "datasets/imagepolicy.py", 'image.draft("RGB", (draft_size, draft_size))', "pass",
          ("tests/test_cache.py", "-k", "draft")),
    Fault("write-in-place", "atomic_open writes straight into the target file",
          "fileio.py", 'fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)',
          "fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)",
          ("tests/test_fileio.py",)),
    # A few more.
    Fault("cpu-attention-no-bias", "CPU inference attention drops the relative-position bias",
          "models/fast/attention.py", "return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0))",
          "return F.scaled_dot_product_attention(q, k, v, attn_mask=None)",
          ("tests/test_acc_vit.py", "-k", "window_attention")),
    Fault("gradcam-no-relu", "Grad-CAM keeps negative evidence (ReLU dropped)",
          "interpret/gradcam.py", "cams = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()",
          "cams = (weights * activations).sum(dim=1, keepdim=True).detach()",
          ("tests/test_gradcam.py", "-k", "varies or class_activation")),
    Fault("resume-best-epoch-reset", "best epoch forgotten on resume",
          "training/train_state.py", 'self.best_epoch = int(state["best_epoch"])', "self.best_epoch = 0",
          ("tests/test_finetune.py", "-k", "worse_epoch")),
    Fault("balance-weights-inverted", "class weights proportional to frequency instead of inverse",
          "training/data.py", "return (counts.sum() / (num_classes * counts)).float()",
          "return (counts / counts.sum() * num_classes).float()",
          ("tests/test_finetune.py", "-k", "balance_weights_is")),
    Fault("bootstrap-unstratified-draw", "resamples drawn from the whole test set, not within classes",
          "reports/bootstrap.py",
          "[rows[rng.integers(0, len(rows), size=(batch, len(rows)))] for rows in members], axis=1",
          "[rng.integers(0, n, size=(batch, len(rows))) for rows in members], axis=1",
          ("tests/test_metrics.py", "-k", "bootstrap")),
    # Intervals, calibration and operating points.
    Fault("row-bootstrap-stratified", "the default row bootstrap resamples within each class",
          "reports/bootstrap.py", "        return row_weights(len(y_true), n_boot, seed)",
          "        return stratified_weights(y_true, n_boot, seed)",
          ("tests/test_report_intervals.py", "-k", "scipy")),
    Fault("wilson-90", "Wilson intervals at z = 1.645 (90%)",
          "reports/intervals.py", "    z = NormalDist().inv_cdf(1 - (1 - level) / 2)", "    z = 1.645",
          ("tests/test_report_intervals.py", "-k", "statsmodels")),
    Fault("temperature-multiplies", "log-probabilities multiplied by T instead of divided",
          "reports/temperature.py", "    z = log_probabilities(probs) / temperature",
          "    z = log_probabilities(probs) * temperature",
          ("tests/test_report_calibration.py", "-k", "report")),
    Fault("threshold-strict", "an image scoring exactly the threshold called negative",
          "reports/operating_points.py", "    called = np.asarray(score) >= threshold",
          "    called = np.asarray(score) > threshold",
          ("tests/test_report_operating_points.py", "-k", "wilson")),
    # Guarded by tests that were made lighter to keep the suite fast: they must still catch.
    Fault("demo-force-keeps-old", "demo --force writes over the earlier demo without removing it",
          "demo.py", "        remove_owned(out, DEMO_KIND)", "        pass",
          ("tests/test_demo.py", "-k", "force_replaced")),
    Fault("fast-se-pool-gradient", "fast squeeze-excitation backward forgets the pooling's 1/(H W)",
          "models/fast/conv.py", "grad_pooled = (grad_hidden @ fc1_weight.to(dtype)) / (height * width)",
          "grad_pooled = grad_hidden @ fc1_weight.to(dtype)",
          ("tests/test_acc_vit.py", "-k", "fast_path_has")),
    Fault("sweep-threads-unsplit", "sweep --gpus runs each start one thread per core",
          "sweep/launch.py", "    threads_env = _threads_per_slot(len(slots))", "    threads_env = {}",
          ("tests/test_sweep.py", "-k", "killed")),
    Fault("models-flops-column", "accvit-med models prints the parameter count as GFLOPs",
          "cli/commands/models.py", 'f"{row.gflops:.3f}"', 'f"{row.params / 1e9:.3f}"',
          ("tests/test_models.py", "-k", "models_command")),

    # Weight inheritance, --force and hidden entries, resume's loss scaler, the image cache key, and the stored
    # table of `accvit-med models`.
    Fault("inherit-conv-gate-wrong-branch", "inherited conv gate favours the dilation-3 branch, not dilation 1",
          "models/inheritance.py",
          "layer.conv.gate.bias.copy_(torch.tensor([GATE_ON] + [GATE_OFF] * (len(acc_vit.CONV_DILATIONS) - 1)))",
          "layer.conv.gate.bias.copy_(torch.tensor([GATE_OFF] * (len(acc_vit.CONV_DILATIONS) - 1) + [GATE_ON]))",
          ("tests/test_inheritance.py", "-k", "documented")),
    Fault("inherit-attention-gate-weights-kept", "inherited attention gate keeps its random weights",
          "models/inheritance.py", "                nn.init.zeros_(gate.weight)", "                pass",
          ("tests/test_inheritance.py", "-k", "documented")),
    Fault("force-ignores-dotfiles", "--force ignores the user's hidden entries (.git/, .env)",
          "ownership.py", "foreign = sorted(p.name for p in folder.iterdir()",
          "foreign = sorted(p.name for p in folder.iterdir() if not p.name.startswith('.')",
          ("tests/test_reliability_catalogue.py", "-k", "hidden_user_entry")),
    Fault("force-dotfiles-always-ours", "every hidden name counts as ours (.* instead of .*.tmp)",
          "ownership.py", 'ALWAYS_OURS = (MARKER_NAME, ".accvit-med.lock", ".*.tmp")',
          'ALWAYS_OURS = (MARKER_NAME, ".accvit-med.lock", ".*")',
          ("tests/test_reliability_catalogue.py", "-k", "hidden_user_entry")),
    Fault("resume-scaler-not-restored", "resume starts a fresh GradScaler (loss scale and growth tracker lost)",
          "training/train_state.py", '        self.scaler.load_state_dict(state["scaler"])', "        pass",
          ("tests/test_finetune.py", "-k", "scaler")),
    Fault("cache-key-size-only", "image cache keyed by path and byte size only (no times)",
          "datasets/cache.py", "{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|", "{stat.st_size}|",
          ("tests/test_cache.py", "-k", "same_byte_size")),
    Fault("cache-key-no-ctime", "image cache key without the change time (a restored mtime hides a rewrite)",
          "datasets/cache.py", "|{stat.st_ctime_ns}|{self.size}", "|{self.size}",
          ("tests/test_cache.py", "-k", "same_byte_size")),
    Fault("ece-edge-ceil", "ECE bins by ceil(c*M)-1 (misplaces edges such as 7/25)",
          "reports/calibration.py",
          'bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)',
          "bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)",
          ("tests/test_metrics.py", "-k", "bin_edge")),
    Fault("ece-edge-upper-bin", "ECE puts a confidence on an edge in the bin above",
          "reports/calibration.py", 'np.searchsorted(edges, confidence, side="left")',
          'np.searchsorted(edges, confidence, side="right")',
          ("tests/test_metrics.py", "-k", "bin_edge")),
    Fault("models-table-stale", "a stored row of the models table differs from the count",
          "models/model_table.py", '"accvit_tiny": (28325720, 5694075392)', '"accvit_tiny": (28325720, 5694075393)',
          ("tests/test_models.py", "-k", "stored_table or builds_no_model")),
    Fault("models-table-unused", "accvit-med models recounts instead of reading the table",
          "models/summary.py",
          "stored = model_table.COUNTS_224.get(name) if image_size == model_table.IMAGE_SIZE and not recount "
          "else None",
          "stored = None", ("tests/test_models.py", "-k", "stored_table or builds_no_model")),
)


def _copy_package(into: Path) -> Path:
    target = into / PACKAGE
    shutil.copytree(REPO / PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _plant(package: Path, fault: Fault) -> None:
    path = package / fault.file
    text = path.read_text(encoding="utf-8")
    count = text.count(fault.original)
    if count != 1:
        raise SystemExit(f"fault '{fault.name}': the line to change occurs {count} times in {fault.file}; "
                         "update the probe")
    path.write_text(text.replace(fault.original, fault.planted), encoding="utf-8")


def _environment(folder: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(folder), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def _run_tests(folder: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    args = [str(REPO / a) if a.startswith("tests/") else a for a in tests]
    started = time.perf_counter()
    # The copy is the working directory: `python -m` puts it first on sys.path.
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=_environment(folder), capture_output=True, text=True)
    return done.returncode, time.perf_counter() - started


def _check_import_path(folder: Path) -> None:
    found = subprocess.run([sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
                           cwd=folder, env=_environment(folder), capture_output=True, text=True).stdout.strip()
    if not found.startswith(str(folder)):
        raise SystemExit(f"the tests would import {found}, not the copy in {folder}")


def _verdict(returncode: int) -> str:
    # pytest: 0 all passed, 1 some test failed, anything else could not run the tests.
    return {0: "MISSED", 1: "caught"}.get(returncode, f"error (pytest exit {returncode})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="fault name (repeatable); default: all")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args()
    if args.list:
        for fault in FAULTS:
            print(f"{fault.name:28} {fault.description}")
        return 0
    chosen = [f for f in FAULTS if not args.only or f.name in args.only]
    unknown = set(args.only or ()) - {f.name for f in FAULTS}
    if unknown:
        print(f"unknown fault(s): {', '.join(sorted(unknown))}; see --list", file=sys.stderr)
        return 2

    rows = []
    with tempfile.TemporaryDirectory(prefix="fault-probe-") as scratch:
        clean = Path(scratch) / "clean"
        clean.mkdir()
        _copy_package(clean)
        _check_import_path(clean)
        # Every selected test, unpatched: it must pass for "caught" to mean the fault was caught.
        for tests in dict.fromkeys(f.tests for f in chosen):
            code, seconds = _run_tests(clean, tests)
            verdict = "passes" if code == 0 else _verdict(code)
            print(f"unpatched  {' '.join(tests):60} {verdict} ({seconds:.0f} s)", flush=True)
            if code != 0:
                print("the unpatched package fails these tests; fix that first", file=sys.stderr)
                return 1
        for fault in chosen:
            folder = Path(scratch) / fault.name
            folder.mkdir()
            _plant(_copy_package(folder), fault)
            code, seconds = _run_tests(folder, fault.tests)
            rows.append((fault, _verdict(code), seconds))
            print(f"planted    {fault.name:28} {_verdict(code)} ({seconds:.0f} s)", flush=True)

    print()
    print("| fault | planted in | tests run | result |")
    print("|---|---|---|---|")
    for fault, verdict, seconds in rows:
        print(f"| {fault.description} | `{fault.file}` | `{' '.join(fault.tests)}` | {verdict} ({seconds:.0f} s) |")
    missed = [fault.name for fault, verdict, _ in rows if verdict != "caught"]
    not_caught = f"; not caught: {', '.join(missed)}" if missed else ""
    print(f"\n{len(rows) - len(missed)} of {len(rows)} planted faults caught{not_caught}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
