"""The reliability catalogue: awkward inputs across every command, one case each.

Every case drives the CLI in-process and asserts the exit code, that stderr carries exactly one
error line (``accvit-med: error: ...``) and no traceback, and what is (not) left on disk. The
network is the registry's ``convnext_tiny`` shrunk to a few thousand parameters (see
tests/helpers/tiny_models.py), trained for one epoch on 64 px images, so the whole file stays fast.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.cli_runner import TRAIN, fails, runner, succeeds
from helpers.quadrant_runs import QUADRANT_CLASSES, SIDE, first_image, make_quadrant_folder
from helpers.tiny_models import shrink_convnext
from PIL import Image

from accvit_med.cli import app
from accvit_med.datasets import cache as cache_module
from accvit_med.datasets import imagepolicy
from accvit_med.datasets.create_split import create_split
from accvit_med.ownership import MARKER_NAME, owned_by_us, read_marker, remove_owned, write_marker
from accvit_med.rundir.claim import LOCK_NAME, check_unlocked

# ---- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Images (2 classes x 6), their split, and one trained run of ours (all read-only for cases)."""
    root = tmp_path_factory.mktemp("catalogue")
    make_quadrant_folder(root / "images", per_class=6)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        args = ["finetune", "--split", str(root / "split.csv"), *TRAIN, "--out", str(root / "run")]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    return root


def fresh_data(tmp_path: Path, per_class: int = 6) -> tuple[Path, Path]:
    """A private copy of the images and a split of them (cases that damage images use this)."""
    images = make_quadrant_folder(tmp_path / "images", per_class=per_class)
    create_split("folder", images, tmp_path / "split.csv", seed=0, grouped=False, progress=False)
    return images, tmp_path / "split.csv"


def copy_run(base: Path, dest: Path) -> Path:
    shutil.copytree(base / "run", dest)
    for lock in dest.rglob(LOCK_NAME):
        lock.unlink()
    return dest


def user_folder(folder: Path, run_like: bool = True) -> dict[str, str]:
    """A user's project folder: files we must never delete (optionally looking like a run)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"NOTES.md": "my notes", "src/main.py": "print('mine')", "thesis.tex": "\\chapter{mine}"}
    if run_like:
        files.update({"config.json": "{}", "checkpoints/keep.txt": "mine", "report.json": "{}"})
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


def intact(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / name).is_file() and (folder / name).read_text() == text for name, text in files.items())


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@functools.cache
def _bomb_png_bytes() -> bytes:
    # Encoding 1.6 billion pixels takes seconds: made once, written wherever a test wants a bomb.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # let Pillow write it
    try:
        buffer = io.BytesIO()
        Image.new("1", (40000, 40000)).save(buffer, format="PNG", optimize=False)
        return buffer.getvalue()
    finally:
        Image.MAX_IMAGE_PIXELS = old


def bomb_png(path: Path) -> Path:
    """A real PNG whose header declares 40000 x 40000 pixels (the pixel data is tiny)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_bomb_png_bytes())
    return path


def truncated_png(path: Path) -> Path:
    source = np.random.default_rng(0).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(source).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def read_only_fs(monkeypatch) -> None:
    """Every new file fails as on a read-only mount (EROFS), without needing one."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


# ---- 1. ownership before deletion -------------------------------------------------------------

@pytest.mark.parametrize("command", ["finetune", "pretrain", "demo"])
def test_force_never_deletes_a_user_folder(base, tmp_path, command):
    project = tmp_path / "project"
    files = user_folder(project)
    if command == "finetune":
        args = ["finetune", "--split", base / "split.csv", *TRAIN, "--out", project, "--force"]
    elif command == "pretrain":
        imagenet = tmp_path / "imagenet"
        for part in ("train", "val"):
            shutil.copytree(base / "images", imagenet / part)
        args = ["pretrain", "--data-path", imagenet, "--model", "accvit_femto", "--out", project, "--force"]
    else:
        args = ["demo", "--quick", "--force", "--out", project]
    line = fails(args, match=f"'{project}' is not an accvit-med")
    assert "remove it by hand" in line and intact(project, files)


def test_force_never_deletes_the_current_folder(base, tmp_path, monkeypatch):
    files = user_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", ".", "--force"], match="current folder")
    assert intact(tmp_path, files)


def test_force_refuses_a_run_made_before_markers(base, tmp_path):
    old = copy_run(base, tmp_path / "old")
    (old / MARKER_NAME).unlink()  # as written by an older version
    before = snapshot(old)
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", old, "--force"], match="remove it by hand")
    assert snapshot(old) == before


def test_force_never_deletes_through_a_symbolic_link(base, tmp_path):
    run = copy_run(base, tmp_path / "real_run")
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    before = snapshot(run)
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", link, "--force"], match="symbolic link")
    assert snapshot(run) == before and link.is_symlink()


def test_force_refuses_our_run_holding_a_user_file(base, tmp_path):
    run = copy_run(base, tmp_path / "run")
    (run / "NOTES.md").write_text("my notes")
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", run, "--force"], match="'NOTES.md'")
    assert (run / "NOTES.md").read_text() == "my notes" and (run / "checkpoints" / "best.pt").is_file()


@pytest.mark.parametrize("hidden", [".git", ".env"])
def test_force_refuses_our_run_holding_a_hidden_user_entry(base, tmp_path, hidden):
    # A user who versions a run folder (.git/) or keeps credentials next to it (.env): the leading
    # dot does not make an entry ours.
    run = copy_run(base, tmp_path / "run")
    if hidden == ".git":
        (run / ".git" / "objects").mkdir(parents=True)
        (run / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    else:
        (run / ".env").write_text("API_TOKEN=secret\n")
    before = snapshot(run)
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", run, "--force"], match=f"'{hidden}'")
    assert snapshot(run) == before and (run / hidden).exists()


def test_force_replaces_our_own_run(base, tmp_path):
    run = copy_run(base, tmp_path / "run")
    (run / "checkpoints" / "stale.pt").write_bytes(b"old")  # inside a folder the marker lists: ours
    succeeds(["evaluate", "--run", run, "--workers", "0"])  # writes <run>/evaluate/best: ours too
    succeeds(["finetune", "--split", base / "split.csv", *TRAIN, "--out", run, "--force"])
    assert not (run / "checkpoints" / "stale.pt").exists() and read_marker(run)["kind"] == "run"


def test_report_never_replaces_a_user_folder(base, tmp_path):
    folder = tmp_path / "notes"
    files = user_folder(folder)  # holds a report.json: once enough to be replaced
    fails(["report", base / "run", "--n-boot", "0", "--out", folder], match="not an accvit-med report folder")
    assert intact(folder, files)


def test_report_refuses_the_current_folder(base, tmp_path, monkeypatch):
    files = user_folder(tmp_path, run_like=False)
    monkeypatch.chdir(tmp_path)
    fails(["report", base / "run", "--n-boot", "0", "--out", "."], match="current folder")
    assert intact(tmp_path, files)


def test_report_replaces_its_own_report_only_when_nothing_was_added(base, tmp_path):
    out = tmp_path / "report"
    succeeds(["report", base / "run", "--n-boot", "0", "--out", out])
    assert owned_by_us(out, "report")
    succeeds(["report", base / "run", "--n-boot", "0", "--out", out])  # our own: replaced
    (out / "thesis.tex").write_text("mine")
    fails(["report", base / "run", "--n-boot", "0", "--out", out], match="'thesis.tex'")
    assert (out / "thesis.tex").read_text() == "mine" and (out / "report.md").is_file()


def test_ownership_api_is_generic(tmp_path, monkeypatch):
    """What a new command (e.g. sweep) uses: kinds never mix, parents of cwd are never removed."""
    sweep = tmp_path / "sweep"
    write_marker(sweep, "sweep", contents=["runs", "sweep.csv"])
    (sweep / "runs").mkdir()
    assert owned_by_us(sweep, "sweep") and not owned_by_us(sweep, "report")
    monkeypatch.chdir(sweep / "runs")
    assert not owned_by_us(sweep, "sweep")  # the current folder is inside it
    monkeypatch.chdir(tmp_path)
    assert remove_owned(sweep, "sweep") and not sweep.exists()


# ---- 2. divergence ------------------------------------------------------------------------------

def test_divergence_stops_at_once(base, tmp_path):
    run = tmp_path / "run"
    args = ["finetune", "--split", base / "split.csv", *TRAIN, "--lr", "1e30", "--batch-size", "2",
            "--epochs", "3", "--out", run]
    line = fails(args, code=3, match="training diverged")
    assert "epoch 1, step" in line and "--lr" in line and "--no-amp" in line and "best.pt" not in line
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 0  # stopped in epoch 1, not after all 3 epochs
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    assert not (run / "checkpoints" / "best.pt").exists() and not (run / "metrics.json").exists()


# ---- 3. one image policy ----------------------------------------------------------------------

def test_split_check_lists_a_bomb_instead_of_crashing(tmp_path):
    images = make_quadrant_folder(tmp_path / "images", per_class=6)
    bomb = bomb_png(images / "plain" / "bomb.png")
    result = succeeds(["split", "--dataset", "folder", "--data-dir", images, "--out", tmp_path / "s.csv",
                       "--check", "--quiet", "--no-group"])
    assert "bomb.png" in result.output and "decompression bomb" in result.output
    assert "plain/bomb.png" not in set(pd.read_csv(tmp_path / "s.csv")["path"])
    assert bomb.exists()


@pytest.mark.parametrize("damage", ["bomb", "zero-byte", "truncated", "not-an-image"])
def test_finetune_refuses_an_unreadable_image_before_the_run_exists(tmp_path, damage):
    images, split = fresh_data(tmp_path)
    bad = first_image(images)
    if damage == "bomb":
        bomb_png(bad)
    elif damage == "zero-byte":
        bad.write_bytes(b"")
    elif damage == "truncated":
        truncated_png(bad)
    else:
        bad.write_text("hello")
    reason = {"bomb": "decompression bomb", "zero-byte": "0 bytes", "truncated": "unreadable:",
              "not-an-image": "not an image"}[damage]
    run = tmp_path / "run"
    line = fails(["finetune", "--split", split, *TRAIN, "--out", run], match=reason)
    assert bad.name in line and not run.exists()


def test_rerun_after_fixing_an_image_needs_no_force(tmp_path):
    images, split = fresh_data(tmp_path)
    bad = first_image(images)
    good = bad.read_bytes()
    bad.write_bytes(b"")
    run = tmp_path / "run"
    fails(["finetune", "--split", split, *TRAIN, "--out", run], match="0 bytes")
    bad.write_bytes(good)
    succeeds(["finetune", "--split", split, *TRAIN, "--out", run])
    assert (run / "metrics.json").is_file()


@pytest.mark.parametrize("skip_bad", [False, True])
def test_predict_bomb_is_one_line_or_skipped(base, tmp_path, skip_bad):
    folder = tmp_path / "new"
    shutil.copytree(base / "images" / "plain", folder)
    bomb_png(folder / "bomb.png")
    args = ["predict", "--run", base / "run", folder, "--out", tmp_path / "p.csv", "--workers", "0"]
    if not skip_bad:
        fails(args, match="decompression bomb")
        assert not (tmp_path / "p.csv").exists()
        return
    result = succeeds([*args, "--skip-bad"])
    assert "bomb.png" in result.stderr and "decompression bomb" in result.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(list((base / "images" / "plain").glob("*.png")))


def test_predict_never_takes_hidden_files_or_our_cache(base, tmp_path):
    folder = tmp_path / "new"
    shutil.copytree(base / "images" / "plain", folder)
    (folder / "._img_000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (folder / ".accvit-cache" / "64").mkdir(parents=True)
    shutil.copy(first_image(base / "images"), folder / ".accvit-cache" / "64" / "cached.png")
    succeeds(["predict", "--run", base / "run", folder, "--out", tmp_path / "p.csv", "--workers", "0"])
    listed = pd.read_csv(tmp_path / "p.csv")["path"]
    assert sorted(Path(p).name for p in listed) == sorted(p.name for p in (base / "images" / "plain").glob("*.png"))


def test_pretrain_folder_skips_appledouble_files(tmp_path):
    from accvit_med.training.pretrain.imagenet import image_folder

    images = make_quadrant_folder(tmp_path / "train", per_class=3)
    (images / "plain" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    (images / "plain" / ".DS_Store").write_bytes(b"Bud1")
    folder = image_folder(images, transform=None)
    assert len(folder) == 6 and not any(Path(p).name.startswith(".") for p, _ in folder.samples)


def test_pretrain_bad_image_is_one_line_and_a_plain_rerun_reuses_the_run(tmp_path):
    """pretrain does not pre-open ImageNet's 1.28 M files: a bad one stops it in one line, and the
    run it leaves (no finished epoch) is taken over by the same command, without --force."""
    data = tmp_path / "imagenet"
    for part in ("train", "val"):
        make_quadrant_folder(data / part, per_class=2)
    for bad in (data / "train").rglob("*.png"):
        bad.write_bytes(b"")
    run = tmp_path / "run"
    args = ["pretrain", "--data-path", data, "--model", "accvit_femto", "--out", run, "--workers", "0",
            "--batch-size", "2", "--global-batch-size", "2", "--epochs", "1", "--warmup-epochs", "0"]
    for _attempt in range(2):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and "Traceback" not in result.output + result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("accvit-med: error:")]
        assert len(errors) == 1 and "unreadable: empty file (0 bytes)" in errors[0], result.stderr
    assert not (run / "checkpoints" / "best.pt").exists() and owned_by_us(run, "run")


def test_prepare_names_a_bomb_in_one_line(tmp_path):
    images, split = fresh_data(tmp_path)
    bomb_png(first_image(images))
    fails(["prepare", "--split", split, "--image-size", str(SIDE), "--workers", "2"], match="decompression bomb")


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG stored sideways with Orientation=6 (rotate 90 clockwise to view) comes out upright."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # a white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    upright = np.asarray(imagepolicy.open_image(path))
    expected = np.rot90(pixels, k=-1)  # numpy's clockwise quarter turn: the reference
    assert upright.shape == expected.shape == (80, 40, 3)
    assert np.abs(upright.astype(int) - expected.astype(int)).mean() < 4


def test_cache_key_changes_with_the_policy(tmp_path, monkeypatch):
    image = first_image(make_quadrant_folder(tmp_path / "images", per_class=1))
    cache = cache_module.ImageCache(tmp_path / "cache", SIDE)
    before = cache.entry(image)
    monkeypatch.setattr(cache_module, "POLICY_VERSION", imagepolicy.POLICY_VERSION + 1)
    assert cache.entry(image) != before


def test_symlink_leaving_the_data_root_is_listed(tmp_path):
    images = make_quadrant_folder(tmp_path / "images", per_class=6)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(first_image(images), outside)
    (images / "plain" / "link.png").symlink_to(outside)
    result = succeeds(["split", "--dataset", "folder", "--data-dir", images, "--out", tmp_path / "s.csv",
                       "--check", "--quiet", "--no-group"])
    assert "link.png" in result.output and "outside the data root" in result.output
    assert "plain/link.png" not in set(pd.read_csv(tmp_path / "s.csv")["path"])


# ---- 4. fail before the work ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["finetune", "report", "split", "predict"])
def test_read_only_output_is_one_line_before_the_work(base, tmp_path, monkeypatch, command):
    out = tmp_path / "out"
    args = {
        "finetune": ["finetune", "--split", base / "split.csv", *TRAIN, "--out", out],
        "report": ["report", base / "run", "--n-boot", "0", "--out", out],
        "split": ["split", "--dataset", "folder", "--data-dir", base / "images", "--out", out / "s.csv", "--quiet"],
        "predict": ["predict", "--run", base / "run", base / "images", "--out", out / "p.csv"],
    }[command]
    import accvit_med.interpret as interpret

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before --out was checked")
    monkeypatch.setattr(interpret, "predict_images", no_inference)
    read_only_fs(monkeypatch)
    fails(args, match="Read-only file system")
    assert not out.exists()


def test_output_below_a_file_is_one_line(base, tmp_path):
    (tmp_path / "file").write_text("x")
    fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", tmp_path / "file" / "run"], match="is a file")


# ---- 5. the small ones --------------------------------------------------------------------------

def test_zero_byte_weights_file(base, tmp_path):
    weights = tmp_path / "empty.pth"
    weights.write_bytes(b"")
    args = ["finetune", "--split", base / "split.csv", *TRAIN[:2], "--weights", weights, *TRAIN[4:],
            "--out", tmp_path / "run"]
    fails(args, match="empty (0 bytes)")
    assert not (tmp_path / "run").exists()


def test_repeated_path_in_predictions_csv(base, tmp_path):
    frame = pd.read_csv(base / "run" / "predictions_test.csv")
    doubled = pd.concat([frame, frame.iloc[[0]]])
    doubled.to_csv(tmp_path / "preds.csv", index=False)
    fails(["report", f"mine={tmp_path / 'preds.csv'}", "--dataset", "x", "--n-boot", "0", "--out", tmp_path / "r"],
          match=f"'{frame['path'].iloc[0]}' is listed more than once")
    assert not (tmp_path / "r").exists()


def test_files_follow_the_umask(base):
    """Our atomic writes get the mode a plain open() gets (0644 under the usual umask 022)."""
    reference = base / "reference.txt"
    with open(reference, "w") as handle:
        handle.write("x")
    expected = stat.S_IMODE(reference.stat().st_mode)
    for name in ("config.json", "history.csv", "metrics.json", "checkpoints/best.pt", MARKER_NAME):
        assert stat.S_IMODE((base / "run" / name).stat().st_mode) == expected, name


def test_a_second_process_cannot_train_into_a_locked_run(base, tmp_path):
    run = copy_run(base, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from accvit_med.rundir.claim import lock_run_dir
        lock_run_dir({str(run)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        fails(["finetune", "--split", base / "split.csv", *TRAIN, "--out", run, "--force"],
              match=f"in use by another process (pid {holder.pid})")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    check_unlocked(run)  # the holder died: its lock file is stale and no longer refuses anything
    assert (run / LOCK_NAME).exists()


def test_ratios_notice(tmp_path):
    images = make_quadrant_folder(tmp_path / "images", per_class=6)
    result = succeeds(["split", "--dataset", "folder", "--data-dir", images, "--out", tmp_path / "s.csv",
                       "--ratios", "3,1,1", "--quiet", "--no-group"])
    assert "note: --ratios 3,1,1 sum to 5; used as 0.6,0.2,0.2" in result.stderr


def test_head_reused_for_other_class_names_warns(base, tmp_path):
    images = tmp_path / "images"
    for old, new in zip(QUADRANT_CLASSES, ("benign", "malignant")):
        shutil.copytree(base / "images" / old, images / new)
    create_split("folder", images, tmp_path / "split.csv", seed=0, grouped=False, progress=False)
    checkpoint = base / "run" / "checkpoints" / "best.pt"
    args = ["finetune", "--split", tmp_path / "split.csv", *TRAIN[:2], "--weights", checkpoint,
            *TRAIN[4:], "--out", tmp_path / "run"]
    result = succeeds(args)
    assert "warning: the head of" in result.stderr and "plain, signal" in result.stderr
    assert "benign, malignant" in result.stderr


# ---- 6. demo runs are ordinary runs -----------------------------------------------------------

def test_batchnorm_momentum_recipe_key_gives_an_ordinary_run(base, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("batchnorm_momentum = 0.25\n")
    run = tmp_path / "run"
    succeeds(["finetune", "--split", base / "split.csv", *TRAIN, "--config", recipe, "--out", run])
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["batchnorm_momentum"] == 0.25 and config["model_factory"] is None
    from accvit_med.models import create_model
    from accvit_med.training.model_setup import build_model
    from accvit_med.training.recipe import FinetuneConfig

    # build_model applies it to every BatchNorm layer of a registry network (accvit_femto has many).
    model, _ = build_model(FinetuneConfig(model="accvit_femto", weights="none", batchnorm_momentum=0.25), 3)
    reference = create_model("accvit_femto", num_classes=3)
    ours = [m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    theirs = [m.momentum for m in reference.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert ours and len(ours) == len(theirs) and set(ours) == {0.25} and 0.25 not in theirs
    succeeds(["predict", "--run", run, base / "images" / "plain", "--workers", "0"])
    succeeds(["evaluate", "--run", run, "--out", tmp_path / "eval", "--workers", "0"])
