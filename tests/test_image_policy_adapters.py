"""One image policy for every adapter: the same file meets the same rule whichever layout lists it.

Each published layout (folder, csv, ham10000, eyepacs, busi; built in miniature by
``accvit_med.datasets.synthetic``) and predict's folder inputs get the same five faults on one of
their samples: a symlink leading out of the data root, a hidden copy, a macOS ``._`` file, a
zero-byte file and a truncated one. The outcome must not depend on the adapter:

- the three bad files: ``split --check`` leaves the sample out and lists it; a split made without
  ``--check`` is refused by ``finetune`` (one line, before the run exists) and by ``prepare``;
  predict refuses in one line, or lists and skips it with ``--skip-bad``;
- the two non-inputs: never a sample; the split is the one of the untouched data set (a label CSV
  that lists them included), and predict leaves them out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers.cli_runner import TRAIN, fails, runner, succeeds
from helpers.quadrant_runs import QUADRANT_CLASSES, make_quadrant_folder
from helpers.tiny_models import shrink_convnext

from accvit_med.cli import app
from accvit_med.datasets import load, synthetic
from accvit_med.datasets.create_split import create_split

ADAPTERS = ("folder", "csv", "ham10000", "eyepacs", "busi")
BAD = ("symlink-out", "zero-byte", "truncated")
NOT_INPUTS = ("hidden", "appledouble")
# What the line or listing says, per fault (a truncated file's reason is Pillow's own words).
REASON = {"symlink-out": "points outside the data root", "zero-byte": "empty file (0 bytes)", "truncated": ""}
SIZE = (24, 24)


@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


def build(adapter: str, root: Path) -> Path:
    """The published layout of ``adapter`` with four tiny images per class; returns --data-dir."""
    if adapter == "folder":
        return synthetic.make_image_folder(root, classes=("a", "b"), per_class=4, size=SIZE)
    if adapter == "csv":
        return synthetic.make_csv_dataset(root, classes=("a", "b"), per_class=4, size=SIZE)
    maker = {"ham10000": synthetic.make_ham10000, "eyepacs": synthetic.make_eyepacs, "busi": synthetic.make_busi}
    return maker[adapter](root, per_class=4, size=SIZE)


def plant(fault: str, image: Path, outside: Path) -> Path:
    """Damage the sample ``image`` (or add a non-input beside it); returns the file planted."""
    if fault == "symlink-out":
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / image.name
        shutil.move(image, target)
        image.symlink_to(target)
        return image
    if fault == "zero-byte":
        image.write_bytes(b"")
        return image
    if fault == "truncated":
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2])
        return image
    if fault == "hidden":
        planted = image.with_name("." + image.name)
        shutil.copyfile(image, planted)  # a good image, but hidden: never an input
        return planted
    planted = image.with_name("._" + image.name)
    planted.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")  # AppleDouble header
    return planted


def list_in_csv(data_dir: Path, planted: Path, label: str) -> None:
    """A label CSV lists whatever it is given: the non-input gets its own row."""
    labels = data_dir / "labels.csv"
    rel = planted.relative_to(data_dir).as_posix()
    labels.write_text(labels.read_text() + f"{rel},{label},{rel}\n")


def damaged(adapter: str, fault: str, tmp_path: Path) -> tuple[Path, str, Path, set[str]]:
    """(data dir, the table's root-relative path of the damaged sample, the file planted, the clean paths)."""
    data_dir = build(adapter, tmp_path / "data")
    clean = load(adapter, data_dir)
    rel = clean.frame["path"].iloc[0]
    planted = plant(fault, clean.root / rel, tmp_path / "elsewhere")
    if adapter == "csv" and fault in NOT_INPUTS:
        list_in_csv(data_dir, planted, clean.frame["label"].iloc[0])
    return data_dir, rel, planted, set(clean.frame["path"])


def split_paths(csv_path: Path) -> set[str]:
    return set(pd.read_csv(csv_path)["path"])


@pytest.mark.parametrize("fault", BAD)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_bad_sample_is_listed_by_split_check_and_refused_by_finetune_and_prepare(tmp_path, adapter, fault):
    data_dir, rel, planted, clean = damaged(adapter, fault, tmp_path)
    checked = tmp_path / "checked.csv"
    result = succeeds(["split", "--dataset", adapter, "--data-dir", data_dir, "--out", checked, "--check",
                       "--no-group", "--quiet"])
    listed = [line for line in result.output.splitlines() if line.strip().startswith(f"{rel}:")]
    assert "left out 1 unreadable image(s)" in result.output and len(listed) == 1, result.output
    assert REASON[fault] in listed[0]
    assert split_paths(checked) == clean - {rel}

    unchecked = tmp_path / "unchecked.csv"
    create_split(adapter, data_dir, unchecked, seed=0, grouped=False, progress=False)
    assert rel in split_paths(unchecked)
    run = tmp_path / "run"
    line = fails(["finetune", "--split", unchecked, *TRAIN, "--out", run], match=planted.name)
    assert "unreadable:" in line and REASON[fault] in line and not run.exists()
    cache = tmp_path / "cache"
    line = fails(["prepare", "--split", unchecked, "--image-size", "32", "--cache-dir", cache, "--workers", "1"],
                 match=planted.name)
    assert REASON[fault] in line


@pytest.mark.parametrize("fault", NOT_INPUTS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_hidden_or_appledouble_file_is_never_a_sample(tmp_path, adapter, fault):
    data_dir, _rel, planted, clean = damaged(adapter, fault, tmp_path)
    out = tmp_path / "split.csv"
    succeeds(["split", "--dataset", adapter, "--data-dir", data_dir, "--out", out, "--no-group", "--quiet"])
    assert split_paths(out) == clean and planted.exists()


def test_a_cached_symlink_leaving_the_root_is_still_refused(tmp_path):
    """A cache entry proves the pixels decode, not that the path is an input: finetune --cache refuses it."""
    from accvit_med.datasets.cache import ImageCache

    data_dir = build("csv", tmp_path / "data")
    split = tmp_path / "split.csv"
    create_split("csv", data_dir, split, seed=0, grouped=False, progress=False)
    image = data_dir / pd.read_csv(split)["path"].iloc[0]
    plant("symlink-out", image, tmp_path / "elsewhere")
    cache = ImageCache(tmp_path / "cache", 64)
    assert cache.ensure(image) and cache.entry(image).exists()  # cached by a version before the rule
    run = tmp_path / "run"
    fails(["finetune", "--split", split, *TRAIN, "--cache", "--cache-dir", tmp_path / "cache", "--out", run],
          match="points outside the data root")
    assert not run.exists()


# ---- predict's inputs: a folder given is the data root -----------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    make_quadrant_folder(root / "images", per_class=6)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        args = ["finetune", "--split", str(root / "split.csv"), *TRAIN, "--out", str(root / "run")]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    return root


@pytest.mark.parametrize("skip_bad", [False, True])
@pytest.mark.parametrize("fault", BAD + NOT_INPUTS)
def test_predict_folder_meets_the_same_policy(trained, tmp_path, fault, skip_bad):
    folder = tmp_path / "new"
    shutil.copytree(trained / "images" / QUADRANT_CLASSES[0], folder)
    images = sorted(p.name for p in folder.glob("*.png"))
    planted = plant(fault, folder / images[0], tmp_path / "elsewhere")
    out = tmp_path / "p.csv"
    args = ["predict", "--run", trained / "run", folder, "--out", out, "--workers", "0"]
    if fault in BAD and not skip_bad:
        line = fails(args, match=planted.name)
        assert REASON[fault] in line and not out.exists()
        return
    result = succeeds([*args, "--skip-bad"] if skip_bad else args)
    predicted = sorted(Path(p).name for p in pd.read_csv(out)["path"])
    if fault in BAD:
        skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped unreadable image")]
        assert len(skipped) == 1 and planted.name in skipped[0] and REASON[fault] in skipped[0]
        assert predicted == images[1:]
    else:
        assert predicted == images and "skipped" not in result.stderr
