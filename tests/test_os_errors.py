"""OS errors are one line: a full disk, a folder in the way, a denied permission, for every command that writes.

A full disk is simulated in-process (tests never need root to mount a small file system): every
write through ``accvit_med.fileio`` accepts half its bytes, then fails with ENOSPC and no file name,
as ``write(2)`` does on a full disk. Each case checks exit code 2, one ``accvit-med: error:`` line
naming the path and the cause, no traceback, no temporary file left, and the files of an earlier
successful run byte for byte as they were.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.cli_runner import TRAIN
from helpers.quadrant_runs import SIDE, first_image, make_quadrant_folder
from helpers.tiny_models import shrink_convnext
from typer.testing import CliRunner

from accvit_med import fileio
from accvit_med.cli import app
from accvit_med.datasets.create_split import create_split
from accvit_med.errors import file_system_error
from accvit_med.rundir.claim import LOCK_NAME

runner = CliRunner()
COMMANDS = ("split", "finetune", "pretrain", "evaluate", "report", "predict", "gradcam", "prepare", "sweep", "demo")
PLAN = """
datasets = ["folder"]
models = ["convnext_tiny"]
seeds = [0]
out = "{out}"
[recipe]
epochs = 1
weights = "none"
batch_size = 4
workers = 0
image_size = 64
"""


@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Images, their split and one trained run (read-only for the cases)."""
    root = tmp_path_factory.mktemp("oserrors")
    make_quadrant_folder(root / "images", per_class=6)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        args = ["finetune", "--split", str(root / "split.csv"), *TRAIN, "--out", str(root / "run")]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    return root


def disk_full(monkeypatch, only: str = "") -> list[str]:
    """From now on every atomic write (to a name containing ``only``) hits a full disk half-way.

    Returns the list the failed targets are appended to.
    """
    real_open = fileio.atomic_open.__wrapped__  # the generator behind the context manager
    failed: list[str] = []

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # write(2) names no file

        def __getattr__(self, name):
            return getattr(self.handle, name)

    @contextlib.contextmanager
    def atomic_open(path, mode="w", **kwargs):
        with contextlib.contextmanager(real_open)(path, mode, **kwargs) as handle:
            if only in Path(path).name:
                failed.append(str(path))
                yield FullDisk(handle)
            else:
                yield handle

    monkeypatch.setattr(fileio, "atomic_open", atomic_open)
    return failed


def digests(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (the run lock aside) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial", ".old"))]


def one_line(args, match: str = "") -> str:
    """Invoke; assert exit 2, exactly one error line and no traceback; return the line."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("accvit-med: error:")]
    assert len(errors) == 1, result.stderr
    assert match in errors[0], errors[0]
    return errors[0]


def command_args(command: str, base: Path, work: Path, monkeypatch) -> list:
    """The command writing into ``work/out``; the inputs it reads come from ``base``."""
    out = work / "out"
    if command == "split":
        return ["split", "--dataset", "folder", "--data-dir", base / "images", "--out", out / "s.csv",
                "--quiet", "--no-group"]
    if command == "finetune":
        return ["finetune", "--split", base / "split.csv", *TRAIN, "--out", out / "run"]
    if command == "pretrain":
        for part in ("train", "val"):
            shutil.copytree(base / "images", work / "imagenet" / part, dirs_exist_ok=True)
        return ["pretrain", "--data-path", work / "imagenet", "--model", "accvit_femto", "--out", out / "run",
                "--workers", "0", "--global-batch-size", "4"]
    if command == "evaluate":
        return ["evaluate", "--run", base / "run", "--out", out / "eval", "--workers", "0"]
    if command == "report":
        return ["report", base / "run", "--n-boot", "0", "--out", out / "report"]
    if command == "predict":
        return ["predict", "--run", base / "run", base / "images" / "plain", "--out", out / "p.csv", "--workers", "0"]
    if command == "gradcam":
        return ["gradcam", "--run", base / "run", first_image(base / "images"), "--out", out / "gradcam"]
    if command == "prepare":
        return ["prepare", "--split", base / "split.csv", "--image-size", str(SIDE), "--cache-dir", out / "cache",
                "--workers", "1"]
    if command == "sweep":
        (work / "splits").mkdir(exist_ok=True)
        shutil.copy(base / "split.csv", work / "splits" / "folder.csv")
        shutil.copy(base / "split.json", work / "splits" / "folder.json")
        (work / "plan.toml").write_text(PLAN.format(out=out / "sweep"))
        monkeypatch.chdir(work)
        return ["sweep", work / "plan.toml"]
    return ["demo", "--quick", "--out", out / "demo"]


# Commands cheap enough to run once successfully first, so that the full disk meets earlier files.
RERUNNABLE = {"split": [], "evaluate": [], "report": [], "predict": [], "gradcam": []}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_is_one_line_and_leaves_earlier_files_intact(base, tmp_path, monkeypatch, command):
    args = command_args(command, base, tmp_path, monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    if command in RERUNNABLE:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output + result.stderr
    (out / "earlier.txt").write_text("an earlier file\n")
    before = digests(out)
    failed = disk_full(monkeypatch)
    line = one_line(args, match="(no space left on device)")
    assert failed and f"cannot write '{failed[0]}'" in line and "free some space" in line
    assert str(tmp_path) in failed[0]
    assert leftovers(tmp_path) == []
    after = digests(out)
    assert {name: after.get(name) for name in before} == before


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_last_good_one(base, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    for lock in run.rglob(LOCK_NAME):
        lock.unlink()
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    history = (run / "history.csv").read_bytes()
    failed = disk_full(monkeypatch, only="last.pt")
    resume = ["finetune", "--split", base / "split.csv", *TRAIN[:4], "--epochs", "2", *TRAIN[6:],
              "--out", run, "--resume"]
    line = one_line(resume, match=f"cannot write '{last}' (no space left on device)")
    assert failed == [str(last)]
    assert f"'{last}' keeps epoch 1, the last good one" in line and "--resume" in line
    assert last.read_bytes() == before and (run / "history.csv").read_bytes() == history
    assert leftovers(run) == []
    monkeypatch.undo()
    shrink_convnext(monkeypatch)
    result = runner.invoke(app, [str(a) for a in resume])
    assert result.exit_code == 0, result.output + result.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2]


def test_split_out_naming_a_folder_is_one_line(base, tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    split = ["split", "--dataset", "folder", "--data-dir", base / "images", "--out", folder, "--quiet", "--no-group"]
    line = one_line(split, match=f"cannot use '{folder}' (it is a folder, where a file is expected)")
    assert "pass a file name" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing", "mine.txt"]


def test_a_file_or_folder_in_the_way_is_one_line(base, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line(["report", base / "run", "--n-boot", "0", "--out", tmp_path / "file" / "report"], match="is a file")
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    in_the_way = run / "evaluate" / "best" / "predictions_test.csv"
    in_the_way.mkdir(parents=True)
    one_line(["evaluate", "--run", run, "--workers", "0"],
             match=f"cannot use '{in_the_way}' (it is a folder, where a file is expected)")
    assert in_the_way.is_dir() and leftovers(run) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT])
def test_permission_read_only_and_quota_are_one_line(base, tmp_path, monkeypatch, code):
    # Root ignores file modes, so the refusal is raised where the file is opened for writing.
    real_mkstemp = fileio.tempfile.mkstemp

    def refuse(*args, dir=None, prefix="", **kwargs):
        if prefix.startswith(".p.csv"):
            raise OSError(code, os.strerror(code), os.path.join(dir, prefix + "x1y2z3.tmp"))
        return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    out = tmp_path / "p.csv"
    line = one_line(["predict", "--run", base / "run", base / "images" / "plain", "--out", out, "--workers", "0"],
                    match=f"'{out}' ({os.strerror(code).lower()}")
    assert "x1y2z3" not in line and not out.exists() and leftovers(tmp_path) == []


def test_only_errors_of_the_file_system_become_one_line():
    assert str(file_system_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "a/file/run"))) == (
        "cannot use 'a/file/run' (a part of the path is a file, where a folder is expected); "
        "rename or move that file, or choose another location")
    assert "cannot use 'runs' (a file is in the way where a folder is expected)" in str(
        file_system_error(FileExistsError(errno.EEXIST, "File exists", "runs")))
    assert file_system_error(OSError(errno.ENOSPC, "No space left on device")) is not None  # write(2) names no file
    assert file_system_error(OSError(errno.EACCES, "Permission denied")) is None  # no path: not a file's refusal
    assert file_system_error(ConnectionResetError(errno.ECONNRESET, "reset", "x")) is None
    assert file_system_error(OSError(errno.EIO, "Input/output error", "x")) is None


def test_debug_shows_the_traceback(base, tmp_path, monkeypatch):
    disk_full(monkeypatch)
    result = runner.invoke(app, ["--debug", "split", "--dataset", "folder", "--data-dir", str(base / "images"),
                                 "--out", str(tmp_path / "s.csv"), "--quiet", "--no-group"])
    assert isinstance(result.exception, OSError) and result.exception.errno == errno.ENOSPC
    assert leftovers(tmp_path) == []

