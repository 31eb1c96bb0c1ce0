"""Splitting: exact stratification, no group leakage, determinism, and the split file format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accvit_med.datasets.base import SampleTable
from accvit_med.datasets.splits import (
    SPLITS,
    class_counts,
    default_split_path,
    make_split,
    parse_ratios,
    read_split,
    write_split,
)
from accvit_med.errors import UserError

RATIOS = st.tuples(*[st.integers(1, 10)] * 3).map(lambda r: tuple(v / sum(r) for v in r))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _table(labels: list[str], groups: list[str] | None = None, classes: list[str] | None = None) -> SampleTable:
    frame = pd.DataFrame({
        "path": [f"img_{i:05d}.png" for i in range(len(labels))],
        "label": labels,
        "group": groups if groups is not None else [f"img_{i:05d}.png" for i in range(len(labels))],
    })
    return SampleTable("toy", Path("/nowhere"), frame, classes or sorted(set(labels)), has_groups=groups is not None)


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.crosstab(frame["label"], frame["split"]).reindex(columns=list(SPLITS), fill_value=0)


@FAST
@given(n=st.integers(3, 500), ratios=RATIOS)
def test_class_counts_sum_fill_every_split_and_stay_within_one(n, ratios):
    counts = class_counts(n, ratios)
    assert sum(counts) == n
    assert min(counts) >= 1
    if min(ratios) * n >= 1:
        assert all(abs(c - r * n) < 1 + 1e-9 for c, r in zip(counts, ratios))


def test_class_counts_examples():
    assert class_counts(10, (0.6, 0.2, 0.2)) == [6, 2, 2]
    assert class_counts(115, (0.6, 0.2, 0.2)) == [69, 23, 23]
    assert class_counts(7, (0.6, 0.2, 0.2)) == [4, 2, 1]  # 4.2/1.4/1.4: largest remainders, ties to val
    assert class_counts(3, (0.6, 0.2, 0.2)) == [1, 1, 1]


@FAST
@given(sizes=st.lists(st.integers(3, 80), min_size=2, max_size=6), ratios=RATIOS, seed=st.integers(0, 2**31))
def test_image_level_split_is_exact_per_class(sizes, ratios, seed):
    labels = [f"c{k}" for k, n in enumerate(sizes) for _ in range(n)]
    table = _table(labels)
    frame = make_split(table, ratios, seed, grouped=False)
    assert sorted(frame["path"]) == sorted(table.frame["path"])
    counts = _counts(frame)
    for k, n in enumerate(sizes):
        row = counts.loc[f"c{k}"].tolist()
        assert row == class_counts(n, ratios)
        assert min(row) >= 1
        if min(ratios) * n >= 1:
            assert all(abs(c - r * n) < 1 + 1e-9 for c, r in zip(row, ratios))


@st.composite
def grouped_tables(draw):
    """Tables of 3-4 classes whose groups hold 1-4 rows, some groups with two labels (EyePACS)."""
    n_classes = draw(st.integers(2, 4))
    labels, groups = [], []
    n_groups = draw(st.integers(3 * n_classes, 60))
    for g in range(n_groups):
        size = draw(st.integers(1, 4))
        main = g % n_classes  # each class owns at least three groups
        mixed = draw(st.booleans()) and size > 1
        for k in range(size):
            c = (main + 1) % n_classes if mixed and k == size - 1 else main
            labels.append(f"c{c}")
            groups.append(f"g{g}")
    return _table(labels, groups)


@FAST
@given(table=grouped_tables(), ratios=RATIOS, seed=st.integers(0, 2**31))
def test_grouped_split_never_leaks_and_fills_every_cell(table, ratios, seed):
    frame = make_split(table, ratios, seed, grouped=True)
    assert len(frame) == len(table.frame)
    splits_per_group = frame.groupby("group")["split"].nunique()
    assert splits_per_group.max() == 1
    assert (_counts(frame).to_numpy() >= 1).all()


def test_grouped_split_is_close_to_target_on_a_realistic_table():
    """HAM10000-like: 7,470 lesions of 1-6 images, the real class imbalance."""
    rng = np.random.default_rng(0)
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    lesion_class = rng.choice(7, 7470, p=[0.03, 0.05, 0.11, 0.012, 0.11, 0.67, 0.018])
    sizes = rng.choice([1, 1, 1, 2, 2, 3, 4, 6], 7470)
    labels = [classes[lesion_class[g]] for g in range(7470) for _ in range(sizes[g])]
    groups = [f"HAM_{g:07d}" for g in range(7470) for _ in range(sizes[g])]
    frame = make_split(_table(labels, groups, classes), (0.6, 0.2, 0.2), 42, grouped=True)
    counts = _counts(frame)
    target = np.outer(counts.sum(axis=1), [0.6, 0.2, 0.2])
    assert np.abs(counts.to_numpy() - target).max() <= 2
    assert frame.groupby("group")["split"].nunique().max() == 1


@FAST
@given(table=grouped_tables(), seed=st.integers(0, 2**31), grouped=st.booleans())
def test_same_seed_same_split(table, seed, grouped):
    first = make_split(table, (0.6, 0.2, 0.2), seed, grouped)
    again = make_split(table, (0.6, 0.2, 0.2), seed, grouped)
    pd.testing.assert_frame_equal(first, again)


def test_seed_changes_the_split():
    table = _table([f"c{i % 3}" for i in range(300)])
    a = make_split(table, seed=1, grouped=False).set_index("path")["split"]
    b = make_split(table, seed=2, grouped=False).set_index("path")["split"]
    assert (a != b.loc[a.index]).any()


def test_rows_come_ordered_by_split_then_path():
    frame = make_split(_table([f"c{i % 3}" for i in range(30)]), grouped=False)
    assert list(frame.columns[:4]) == ["path", "label", "group", "split"]
    order = frame["split"].map(SPLITS.index)
    assert order.is_monotonic_increasing
    for _, part in frame.groupby("split"):
        assert part["path"].is_monotonic_increasing


def test_too_small_class_is_named():
    table = _table(["a"] * 10 + ["rare"] * 2 + ["b"] * 10)
    with pytest.raises(UserError, match="class 'rare' of toy has 2 image"):
        make_split(table, grouped=False)


def test_too_few_groups_is_named_and_suggests_no_group():
    labels = ["a"] * 9 + ["b"] * 6
    groups = [f"a{i}" for i in range(9)] + ["b1", "b1", "b1", "b2", "b2", "b2"]
    with pytest.raises(UserError, match=r"class 'b' of toy has 2 group.*--no-group"):
        make_split(_table(labels, groups))


@pytest.mark.parametrize(
    "text,expected",
    [("60,20,20", (0.6, 0.2, 0.2)), ("0.7,0.15,0.15", (0.7, 0.15, 0.15)), ("1,1,1", (1 / 3, 1 / 3, 1 / 3))],
)
def test_parse_ratios(text, expected):
    assert parse_ratios(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["60,40", "60,20,0", "a,b,c", "60,-20,60", "nan,1,1"])
def test_parse_ratios_rejects(text):
    with pytest.raises(UserError, match="--ratios"):
        parse_ratios(text)


# --------------------------------------------------------------------------------------------
# The file format


def _written(tmp_path: Path) -> tuple[Path, dict]:
    table = _table([f"c{i % 3}" for i in range(30)])
    frame = make_split(table, grouped=False)
    manifest = {"dataset": "toy", "data_root": str(tmp_path), "classes": table.classes, "seed": 42}
    csv_path = tmp_path / "splits" / "toy.csv"
    return csv_path, write_split(frame, manifest, csv_path)


def test_write_then_read_round_trip(tmp_path):
    csv_path, manifest = _written(tmp_path)
    split = read_split(csv_path)
    assert split.classes == ["c0", "c1", "c2"]
    assert split.root == tmp_path
    assert split.ordinal is False
    assert split.sha256 == manifest["csv_sha256"]
    assert split.frame.columns[:4].tolist() == ["path", "label", "group", "split"]
    assert len(split.part("train")) == 18 and len(split.part("test")) == 6
    on_disk = json.loads(csv_path.with_suffix(".json").read_text())
    assert on_disk["counts"]["val"] == {"c0": 2, "c1": 2, "c2": 2}
    assert on_disk["n_samples"] == 30
    assert "time" not in json.dumps(on_disk)
    assert csv_path.read_bytes().count(b"\r") == 0


def test_read_split_rejects_an_edited_csv(tmp_path):
    csv_path, _ = _written(tmp_path)
    csv_path.write_text(csv_path.read_text().replace(",train\n", ",test\n", 1))
    with pytest.raises(UserError, match="does not match its manifest"):
        read_split(csv_path)


def test_read_split_rejects_missing_columns_and_unknown_labels(tmp_path):
    csv_path, manifest = _written(tmp_path)
    frame = pd.read_csv(csv_path, dtype=str)
    frame.drop(columns=["group"]).to_csv(csv_path, index=False)
    with pytest.raises(UserError, match="lacks column"):
        read_split(csv_path)
    frame.loc[0, "label"] = "c9"
    write_split(frame, manifest, csv_path)  # a consistent manifest, but c9 is not a class
    with pytest.raises(UserError, match=r"label\(s\) \['c9'\] not in"):
        read_split(csv_path)


def test_read_split_needs_the_manifest(tmp_path):
    csv_path, _ = _written(tmp_path)
    csv_path.with_suffix(".json").unlink()
    with pytest.raises(UserError, match="manifest .* not found"):
        read_split(csv_path)
    with pytest.raises(UserError, match="not found"):
        read_split(tmp_path / "nope.csv")


def test_default_split_path():
    assert default_split_path("eyepacs") == Path("splits/eyepacs.csv")
