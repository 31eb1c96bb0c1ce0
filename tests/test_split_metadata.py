"""`accvit-med split` keeps subgroup metadata and records the data flow (what was left out, why).

References are independent of the adapters: the published metadata files read with pandas, and
the image files counted on disk with os.walk.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets import synthetic
from accvit_med.datasets.splits import read_split

runner = CliRunner()


def _split(*args) -> object:
    return runner.invoke(app, ["split", "--quiet", *map(str, args)])


def test_ham10000_split_keeps_the_metadata_of_each_image(tmp_path):
    root = synthetic.make_ham10000(tmp_path / "ham", per_class=8, size=(24, 18), seed=5)
    out = tmp_path / "ham.csv"
    assert _split("--dataset", "ham10000", "--data-dir", root, "--out", out).exit_code == 0
    split = read_split(out)
    columns = ["age", "sex", "localization", "dx_type"]
    assert split.frame.columns.tolist() == ["path", "label", "group", "split", *columns]
    assert split.manifest["subgroups"] == columns
    metadata = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    got = split.frame.assign(image_id=split.frame["path"].map(lambda p: Path(p).stem))
    merged = got.merge(metadata, on="image_id", suffixes=("", "_published"), validate="one_to_one")
    assert len(merged) == len(metadata)
    for column in columns:
        assert (merged[column] == merged[f"{column}_published"]).all(), column
    assert (merged["age"] == "").any()  # empty ages stay empty (the report bins them as unknown)

    only = tmp_path / "only.csv"
    assert _split("--dataset", "ham10000", "--data-dir", root, "--out", only, "--subgroups", "sex").exit_code == 0
    assert read_split(only).frame.columns.tolist() == ["path", "label", "group", "split", "sex"]


def test_eyepacs_split_keeps_the_eye_of_the_file_name(tmp_path):
    root = synthetic.make_eyepacs(tmp_path / "eyepacs", per_class=4, size=(20, 20))
    out = tmp_path / "eyepacs.csv"
    assert _split("--dataset", "eyepacs", "--data-dir", root, "--out", out).exit_code == 0
    frame = read_split(out).frame
    expected = frame["path"].map(lambda p: re.fullmatch(r".*_(left|right)\.jpeg", p).group(1))
    assert (frame["eye"] == expected).all() and set(frame["eye"]) == {"left", "right"}


def test_csv_split_keeps_the_columns_named_and_refuses_unknown_ones(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path / "own", per_class=6, size=(16, 16))
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels["site"] = [f"site{i % 3}" for i in range(len(labels))]
    labels["scanner"] = "x"
    labels.to_csv(root / "labels.csv", index=False)
    out = tmp_path / "own.csv"
    result = _split("--dataset", "csv", "--data-dir", root, "--out", out, "--subgroups", "site")
    assert result.exit_code == 0, result.output
    split = read_split(out)
    assert split.frame.columns.tolist() == ["path", "label", "group", "split", "site"]
    assert dict(zip(split.frame["path"], split.frame["site"])) == dict(zip(labels["path"], labels["site"]))
    # Without --subgroups a csv split keeps no extra column.
    plain = tmp_path / "plain.csv"
    assert _split("--dataset", "csv", "--data-dir", root, "--out", plain).exit_code == 0
    assert read_split(plain).frame.columns.tolist() == ["path", "label", "group", "split"]

    bad = _split("--dataset", "csv", "--data-dir", root, "--out", tmp_path / "bad.csv", "--subgroups", "age")
    assert bad.exit_code == 2 and "no metadata column 'age'" in bad.stderr and "site, scanner" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad.csv").exists()
    folder = synthetic.make_image_folder(tmp_path / "folder", per_class=3, size=(16, 16))
    refused = _split("--dataset", "folder", "--data-dir", folder, "--out", tmp_path / "f.csv", "--subgroups", "age")
    assert refused.exit_code == 2 and "its columns: none" in refused.stderr


def _image_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, files in os.walk(root) for f in files
            if f.lower().endswith((".jpg", ".jpeg", ".png"))]


def test_manifest_records_every_image_left_out_and_why(tmp_path):
    root = synthetic.make_ham10000(tmp_path / "ham", per_class=8, size=(24, 18), seed=5, mirror_copy=True, corrupt=2)
    part = root / "HAM10000_images_part_2"
    some = sorted(part.glob("*.jpg"))[-1]
    shutil.copyfile(some, part / f"._{some.name}")  # a macOS AppleDouble file
    shutil.copyfile(some, part / "ISIC_9999999.jpg")  # an image the metadata does not list
    out = tmp_path / "ham.csv"
    result = _split("--dataset", "ham10000", "--data-dir", root, "--out", out, "--check")
    assert result.exit_code == 0, result.output
    flow = read_split(out).manifest["flow"]

    files = _image_files(root)
    metadata = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str)
    hidden = [f for f in files if f.name.startswith(".")]
    visible = [f for f in files if not f.name.startswith(".")]
    copies = len(visible) - len({f.stem for f in visible})
    unlisted = len({f.stem for f in visible} - set(metadata["image_id"]))
    assert flow["images_found"] == len(files)
    assert flow["left_out"] == {"hidden files": len(hidden), "duplicate copies": copies,
                                "not in the label file": unlisted, "unreadable": 2}
    assert flow["samples"] == len(metadata) - 2 == len(read_split(out).frame)
    assert sum(flow["unreadable_by_class"].values()) == 2
    assert "left out:" in result.stdout


def test_busi_masks_are_counted_as_left_out(tmp_path):
    root = synthetic.make_busi(tmp_path / "busi", per_class=4, size=(32, 32))
    out = tmp_path / "busi.csv"
    assert _split("--dataset", "busi", "--data-dir", root, "--out", out).exit_code == 0
    flow = read_split(out).manifest["flow"]
    masks = [f for f in _image_files(root) if "_mask" in f.name]
    assert flow["left_out"] == {"masks": len(masks)}
    assert flow["images_found"] == len(_image_files(root)) == flow["samples"] + len(masks)


def test_report_flow_and_characteristics_are_the_split_files_numbers(tmp_path):
    import json

    from accvit_med.reports.flow import characteristics, compute_flow, flow_figure, render_flow_table
    from accvit_med.reports.run_sources import RunSplit

    root = synthetic.make_ham10000(tmp_path / "ham", per_class={"akiec": 8, "bcc": 9, "bkl": 12, "df": 8,
                                                                "mel": 10, "nv": 20, "vasc": 8}, size=(16, 12), seed=5)
    part_1 = root / "HAM10000_images_part_1"
    shutil.copyfile(sorted(part_1.glob("*.jpg"))[0], part_1 / "._x.jpg")
    out = tmp_path / "ham.csv"
    assert _split("--dataset", "ham10000", "--data-dir", root, "--out", out).exit_code == 0
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    split = RunSplit(out, frame, json.loads(out.with_suffix(".json").read_text()))
    flow = compute_flow(split)
    crosstab = pd.crosstab(frame["label"], frame["split"])
    assert flow.counts == {s: {c: int(crosstab.at[c, s]) for c in crosstab.index} for s in ("train", "val", "test")}
    assert flow.left_out == {"hidden files": 1} and flow.images_found == len(_image_files(root))
    table = render_flow_table(flow)
    assert "| left out: hidden files | 1 |" in table
    texts = [t.get_text() for t in flow_figure(flow).axes[0].texts]
    assert any(t.startswith(f"test: {(frame['split'] == 'test').sum()}") for t in texts)
    parts = characteristics(split)["partitions"]
    for part in ("train", "val", "test"):
        rows = frame[frame["split"] == part]
        ages = pd.to_numeric(rows["age"], errors="coerce")
        assert parts[part]["age"]["mean"] == pytest.approx(ages.mean())
        assert parts[part]["age"]["unknown"] == int(ages.isna().sum())
        assert parts[part]["sex"] == rows["sex"].value_counts().to_dict()
