"""Dataset adapters read each published layout (built in miniature) into one sample table."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from accvit_med import datasets
from accvit_med.datasets import synthetic
from accvit_med.errors import UserError


def _rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def _check_paths(table) -> None:
    for rel in table.frame["path"]:
        assert "\\" not in rel and not rel.startswith("/")
        assert (table.root / rel).is_file()


def test_list_datasets():
    assert datasets.list_datasets() == ["ham10000", "eyepacs", "busi", "isic2019", "folder", "csv"]


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'mnist'; use one of ham10000"):
        datasets.load("mnist", ".")


# ---------------------------------------------------------------- HAM10000


@pytest.mark.parametrize("metadata", ["csv", "tab"])
def test_ham10000_table_matches_metadata(tmp_path, metadata):
    root = synthetic.make_ham10000(tmp_path, per_class=4, size=(32, 24), metadata=metadata)
    rows = _rows(root / f"HAM10000_metadata.{metadata}", "\t" if metadata == "tab" else ",")
    table = datasets.load("ham10000", root)
    assert table.name == "ham10000" and table.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert not table.ordinal and table.has_groups
    expected = {f"{r['image_id']}.jpg": (r["dx"], r["lesion_id"]) for r in rows}
    rows_read = table.frame[["path", "label", "group"]].itertuples(index=False)
    got = {Path(p).name: (label, group) for p, label, group in rows_read}
    assert got == expected
    assert {p.split("/")[0] for p in table.frame["path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert table.root == root.resolve()
    _check_paths(table)


def test_ham10000_mirror_copies_counted_once(tmp_path):
    root = synthetic.make_ham10000(tmp_path, per_class=3, size=(32, 24), mirror_copy=True)
    table = datasets.load("ham10000", root)
    assert len(table) == 21
    assert table.frame["path"].map(lambda p: Path(p).name).is_unique
    assert not any(p.startswith("ham10000_images") for p in table.frame["path"])


def test_ham10000_nested_one_level_down(tmp_path):
    synthetic.make_ham10000(tmp_path / "archive", per_class=3, size=(32, 24))
    table = datasets.load("ham10000", tmp_path)
    assert len(table) == 21
    assert all(p.startswith("archive/HAM10000_images_part_") for p in table.frame["path"])
    _check_paths(table)


@pytest.mark.parametrize("groupings", [True, False])
def test_isic2018_task3_layout(tmp_path, groupings):
    root = synthetic.make_isic2018(tmp_path, per_class=3, size=(32, 24), lesion_groupings=groupings)
    table = datasets.load("ham10000", root)
    truth = _rows(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv")
    expected = {r["image"]: next(k.lower() for k, v in r.items() if v == "1.0") for r in truth}
    assert {Path(p).stem: label for p, label in zip(table.frame["path"], table.frame["label"])} == expected
    assert table.has_groups is groupings
    if groupings:
        lesions = {r["image"]: r["lesion_id"] for r in _rows(root / "ISIC2018_Task3_Training_LesionGroupings.csv")}
        assert {Path(p).stem: g for p, g in zip(table.frame["path"], table.frame["group"])} == lesions
    else:
        assert table.notes and "LesionGroupings" in table.notes[0]
    assert not any(p.endswith(".txt") for p in table.frame["path"])


# ---------------------------------------------------------------- EyePACS


def test_eyepacs_table_groups_by_patient(tmp_path):
    root = synthetic.make_eyepacs(tmp_path, per_class=4, size=(32, 32))
    table = datasets.load("eyepacs", root)
    assert table.classes == ["none", "mild", "moderate", "severe", "proliferative"] and table.ordinal
    rows = {r["image"]: int(r["level"]) for r in _rows(root / "trainLabels.csv")}
    for path, label, group in table.frame[["path", "label", "group"]].itertuples(index=False):
        image = Path(path).stem
        assert path == f"train/{image}.jpeg"
        assert table.classes.index(label) == rows[image]
        assert group == image.split("_")[0]
    assert (table.frame.groupby("group").size() == 2).all()
    _check_paths(table)


def test_eyepacs_resized_mirror(tmp_path):
    synthetic.make_eyepacs(
        tmp_path / "diabetic-retinopathy-resized", per_class=2, size=(32, 32), folder="resized_train",
        extension=".png", labels_file="trainLabels_cropped.csv",
    )
    table = datasets.load("eyepacs", tmp_path)
    assert len(table) == 10
    prefix = "diabetic-retinopathy-resized/resized_train/"
    assert all(p.startswith(prefix) and p.endswith(".png") for p in table.frame["path"])


def test_eyepacs_patient_of():
    from accvit_med.datasets.eyepacs import patient_of

    assert patient_of("10_left") == "10"
    assert patient_of("4417_right") == "4417"
    assert patient_of("odd_name") == "odd_name"


# ---------------------------------------------------------------- BUSI


def test_busi_masks_are_never_samples(tmp_path):
    synthetic.make_busi(tmp_path / "kaggle", per_class={"benign": 5, "malignant": 4, "normal": 3}, size=(40, 32))
    table = datasets.load("busi", tmp_path)
    assert table.classes == ["benign", "malignant", "normal"] and not table.has_groups
    assert table.frame["label"].value_counts().to_dict() == {"benign": 5, "malignant": 4, "normal": 3}
    assert not table.frame["path"].str.contains("_mask").any()
    masks = sorted(str(p.relative_to(tmp_path).as_posix()) for p in tmp_path.rglob("*_mask*.png"))
    listed = sorted(m for cell in table.frame["mask_paths"] for m in cell.split(";"))
    assert listed == masks
    row = table.frame.set_index("path").loc["kaggle/Dataset_BUSI_with_GT/benign/benign (3).png"]
    assert row["mask_paths"].split(";") == [
        "kaggle/Dataset_BUSI_with_GT/benign/benign (3)_mask.png",
        "kaggle/Dataset_BUSI_with_GT/benign/benign (3)_mask_1.png",
    ]
    _check_paths(table)


def test_busi_dedupe_joins_near_and_exact_copies(tmp_path):
    root = synthetic.make_busi(tmp_path, per_class=4, size=(64, 64), near_duplicates=2, exact_duplicates=1)
    plain = datasets.load("busi", root)
    assert plain.frame["group"].is_unique
    table = datasets.load("busi", root, dedupe=True)
    assert table.has_groups
    group = table.frame.set_index("path")["group"]
    base = "Dataset_BUSI_with_GT"
    # Copies 0 and 1 are near (benign 5 <- 1, malignant 5 <- 1), copy 2 exact (normal 5 <- 1).
    for name in ("benign", "malignant", "normal"):
        assert group[f"{base}/{name}/{name} (5).png"] == group[f"{base}/{name}/{name} (1).png"]
    assert table.frame["group"].nunique() == len(table) - 3


# ---------------------------------------------------------------- folder and csv


def test_image_folder(tmp_path):
    root = synthetic.make_image_folder(tmp_path, classes=("normal", "abnormal"), per_class=3, size=(16, 16))
    (root / "abnormal" / "notes.txt").write_text("not an image")
    table = datasets.load("folder", root)
    assert table.classes == ["abnormal", "normal"]
    assert len(table) == 6 and not table.has_groups
    assert set(table.frame["path"]) == {f"{c}/img_{i:04d}.png" for c in ("normal", "abnormal") for i in (1, 2, 3)}


def test_csv_dataset_folder_or_file(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path, classes=("x", "y"), per_class=4, size=(16, 16))
    for where in (root, root / "labels.csv"):
        table = datasets.load("csv", where)
        assert table.classes == ["x", "y"] and table.has_groups
        assert len(table) == 8 and table.frame["group"].nunique() == 4
        _check_paths(table)


def test_csv_dataset_without_group_column(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path, classes=("x", "y"), per_class=3, size=(16, 16))
    rows = _rows(root / "labels.csv")
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in rows))
    table = datasets.load("csv", root)
    assert not table.has_groups and table.frame["group"].tolist() == table.frame["path"].tolist()


# ---------------------------------------------------------------- bad input: one clear UserError


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="data folder .* not found"):
        datasets.load("ham10000", tmp_path / "nope")


@pytest.mark.parametrize(
    "name,expected", [
        ("ham10000", "HAM10000_metadata.csv"),
        ("eyepacs", "trainLabels.csv"),
        ("busi", "Dataset_BUSI_with_GT"),
        ("csv", "no CSV file"),
        ("folder", "one subfolder per class"),
    ],
)
def test_layout_not_found_names_what_was_expected(tmp_path, name, expected):
    (tmp_path / "something.txt").write_text("hello")
    with pytest.raises(UserError, match=expected):
        datasets.load(name, tmp_path)


def test_metadata_missing_column(tmp_path):
    root = synthetic.make_ham10000(tmp_path, per_class=3, size=(16, 12))
    text = (root / "HAM10000_metadata.csv").read_text().replace("lesion_id,image_id,dx", "lesion,image_id,diagnosis", 1)
    (root / "HAM10000_metadata.csv").write_text(text)
    with pytest.raises(UserError, match=r"lacks column\(s\) lesion_id, dx"):
        datasets.load("ham10000", root)


def test_malformed_csv(tmp_path):
    root = synthetic.make_eyepacs(tmp_path, per_class=3, size=(16, 16))
    (root / "trainLabels.csv").write_text('image,level\n"10_left,0\n11_left,1,2,3\n')
    with pytest.raises(UserError, match="not a valid CSV"):
        datasets.load("eyepacs", root)
    (root / "trainLabels.csv").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        datasets.load("eyepacs", root)


@pytest.mark.parametrize(
    "build,labels_file,old,new,message",
    [
        (synthetic.make_ham10000, "HAM10000_metadata.csv", ",nv,", ",naevus,", "unknown label.*'naevus'.*dx"),
        (synthetic.make_eyepacs, "trainLabels.csv", "_left,4", "_left,7", "unknown label.*'7'.*level"),
    ],
)
def test_unknown_labels(tmp_path, build, labels_file, old, new, message):
    root = build(tmp_path, per_class=3, size=(16, 16))
    path = root / labels_file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(UserError, match=message):
        datasets.load("ham10000" if "HAM" in labels_file else "eyepacs", root)


def test_isic_row_not_one_hot(tmp_path):
    root = synthetic.make_isic2018(tmp_path, per_class=2, size=(16, 12))
    truth = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    lines = truth.read_text().splitlines()
    lines[1] = lines[1].split(",")[0] + ",1.0,1.0,0.0,0.0,0.0,0.0,0.0"
    truth.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="not one-hot"):
        datasets.load("ham10000", root)


@pytest.mark.parametrize("name", ["ham10000", "eyepacs"])
def test_listed_image_missing(tmp_path, name):
    build = synthetic.make_ham10000 if name == "ham10000" else synthetic.make_eyepacs
    root = build(tmp_path, per_class=3, size=(16, 16))
    victim = sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".jpeg"))[0]
    victim.unlink()
    with pytest.raises(UserError, match=rf"1 image\(s\) listed in .* do not exist, e.g. '{victim.stem}'"):
        datasets.load(name, root)


def test_csv_path_outside_root(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path / "data", classes=("x", "y"), per_class=3, size=(16, 16))
    shutil.copy(root / "images" / "x_0000.png", tmp_path / "outside.png")
    with open(root / "labels.csv", "a") as handle:
        handle.write("../outside.png,x,\n")
    with pytest.raises(UserError, match="'../outside.png' .* points outside the data root"):
        datasets.load("csv", root)
    (root / "labels.csv").write_text(f"path,label\n{tmp_path / 'outside.png'},x\n")
    with pytest.raises(UserError, match="points outside the data root"):
        datasets.load("csv", root)


def test_csv_listed_image_missing_and_repeated(tmp_path):
    root = synthetic.make_csv_dataset(tmp_path, classes=("x", "y"), per_class=3, size=(16, 16))
    original = (root / "labels.csv").read_text()
    (root / "labels.csv").write_text(original + "images/ghost.png,x,g\n")
    with pytest.raises(UserError, match="'images/ghost.png'"):
        datasets.load("csv", root)
    (root / "labels.csv").write_text(original + original.splitlines()[1] + "\n")
    with pytest.raises(UserError, match="listed twice"):
        datasets.load("csv", root)


def test_near_duplicate_clusters_agree_with_imagehash_distances(tmp_path):
    """Our packed-bit Hamming distances give the clusters imagehash's own `h1 - h2` gives."""
    import imagehash
    from PIL import Image

    from accvit_med.datasets.audit import NEAR_DUPLICATE_DISTANCE, near_duplicates

    root = synthetic.make_busi(tmp_path, per_class=5, size=(64, 64), near_duplicates=3, exact_duplicates=1)
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png") if "_mask" not in p.name)
    hashes = {p: imagehash.phash(Image.open(root / p).convert("L")) for p in paths}
    parent = {p: p for p in paths}

    def find(p):
        while parent[p] != p:
            p = parent[p]
        return p

    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            if hashes[a] - hashes[b] <= NEAR_DUPLICATE_DISTANCE:
                parent[find(b)] = find(a)
    expected: dict[str, list[str]] = {}
    for p in paths:
        expected.setdefault(find(p), []).append(p)
    reference = sorted(sorted(c) for c in expected.values() if len(c) > 1)
    assert near_duplicates(root, paths) == reference
    assert len(reference) == 4
