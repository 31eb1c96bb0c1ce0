"""The synthetic layout builders: real file names and headers, determinism, learnable classes."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from accvit_med.datasets import synthetic


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def test_ham10000_layout(tmp_path):
    root = synthetic.make_ham10000(tmp_path, per_class=5, size=(60, 45), seed=1)
    header = (root / "HAM10000_metadata.csv").read_text().splitlines()[0]
    assert header == "lesion_id,image_id,dx,dx_type,age,sex,localization"
    rows = _rows(root / "HAM10000_metadata.csv")
    assert Counter(r["dx"] for r in rows) == {c: 5 for c in synthetic.HAM_CLASSES}
    per_lesion = Counter(r["lesion_id"] for r in rows)
    assert max(per_lesion.values()) >= 2, "HAM10000 has several photos of one lesion"
    assert len({r["image_id"] for r in rows}) == len(rows)
    part1 = sorted(p.stem for p in (root / "HAM10000_images_part_1").glob("*.jpg"))
    part2 = sorted(p.stem for p in (root / "HAM10000_images_part_2").glob("*.jpg"))
    assert part1 and part2 and sorted(part1 + part2) == sorted(r["image_id"] for r in rows)
    with Image.open(root / "HAM10000_images_part_1" / f"{part1[0]}.jpg") as image:
        assert image.format == "JPEG" and image.size == (60, 45)


def test_ham10000_dataverse_tab(tmp_path):
    root = synthetic.make_ham10000(tmp_path, per_class=2, size=(32, 24), metadata="tab")
    rows = _rows(root / "HAM10000_metadata.tab", delimiter="\t")
    assert list(rows[0]) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    assert not (root / "HAM10000_metadata.csv").exists()


def test_ham10000_default_size_is_the_real_one(tmp_path):
    root = synthetic.make_ham10000(tmp_path, per_class={"df": 1})
    (image_path,) = root.rglob("*.jpg")
    with Image.open(image_path) as image:
        assert image.size == (600, 450)


def test_isic2018_layout(tmp_path):
    root = synthetic.make_isic2018(tmp_path, per_class=3, size=(32, 24))
    truth = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    assert truth.read_text().splitlines()[0] == "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
    rows = _rows(truth)
    assert all(sorted(v for k, v in r.items() if k != "image") == ["0.0"] * 6 + ["1.0"] for r in rows)
    inputs = root / "ISIC2018_Task3_Training_Input"
    assert (inputs / "ATTRIBUTION.txt").exists() and (inputs / "LICENSE.txt").exists()
    assert len(list(inputs.glob("ISIC_*.jpg"))) == 21
    groupings = _rows(root / "ISIC2018_Task3_Training_LesionGroupings.csv")
    assert list(groupings[0]) == ["image", "lesion_id", "diagnosis_confirm_type"]


def test_eyepacs_layout_pairs_of_eyes(tmp_path):
    root = synthetic.make_eyepacs(tmp_path, per_class=6, size=(48, 48), seed=3)
    rows = _rows(root / "trainLabels.csv")
    assert list(rows[0]) == ["image", "level"]
    assert Counter(r["level"] for r in rows) == {str(i): 6 for i in range(5)}
    eyes = Counter(r["image"].split("_")[0] for r in rows)
    assert set(eyes.values()) == {2}, "every patient has a left and a right eye"
    assert {r["image"].split("_")[1] for r in rows} == {"left", "right"}
    files = sorted(p.name for p in (root / "train").iterdir())
    assert files == sorted(f"{r['image']}.jpeg" for r in rows)
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r["image"].split("_")[0], set()).add(r["level"])
    assert any(len(levels) == 2 for levels in by_patient.values()), "some patients' eyes differ"


def test_eyepacs_cropped_mirror_variant(tmp_path):
    root = synthetic.make_eyepacs(
        tmp_path, per_class=2, size=(32, 32), folder="resized_train", extension=".png",
        labels_file="trainLabels_cropped.csv",
    )
    header = (root / "trainLabels_cropped.csv").read_text().splitlines()[0]
    assert header == ",image,level"
    assert len(list((root / "resized_train").glob("*.png"))) == 10


def test_busi_layout_masks_and_alpha(tmp_path):
    root = synthetic.make_busi(tmp_path, per_class={"benign": 6, "malignant": 4, "normal": 3}, size=(48, 40))
    base = root / "Dataset_BUSI_with_GT"
    assert sorted(p.name for p in base.iterdir()) == ["benign", "malignant", "normal"]
    images = [p for p in base.rglob("*.png") if "_mask" not in p.name]
    masks = [p for p in base.rglob("*.png") if "_mask" in p.name]
    assert Counter(p.parent.name for p in images) == {"benign": 6, "malignant": 4, "normal": 3}
    assert (base / "benign" / "benign (1).png").exists()
    assert (base / "benign" / "benign (1)_mask.png").exists()
    assert (base / "benign" / "benign (3)_mask_1.png").exists()
    assert len(masks) > len(images)
    modes = set()
    for p in images:
        with Image.open(p) as image:
            modes.add(image.mode)
    assert modes == {"RGB", "RGBA"}


def test_busi_duplicates_are_appended(tmp_path):
    root = synthetic.make_busi(tmp_path, per_class=3, size=(40, 32), near_duplicates=1, exact_duplicates=1)
    base = root / "Dataset_BUSI_with_GT"
    # Duplicate 0 (near) is benign (4) from benign (1); duplicate 1 (exact) is malignant (4).
    malignant = base / "malignant"
    assert (malignant / "malignant (4).png").read_bytes() == (malignant / "malignant (1).png").read_bytes()
    near = np.asarray(Image.open(base / "benign" / "benign (4).png").convert("RGB"), dtype=int)
    source = np.asarray(Image.open(base / "benign" / "benign (1).png").convert("RGB"), dtype=int)
    assert near.shape == source.shape and 0 < (near != source).any(axis=2).sum() <= 4


def test_image_folder_and_csv(tmp_path):
    folder = synthetic.make_image_folder(tmp_path / "f", classes=("a", "b"), per_class=3, size=(16, 16))
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        f"{c}/img_{i:04d}.png" for c in "ab" for i in (1, 2, 3)
    ]
    data = synthetic.make_csv_dataset(tmp_path / "c", classes=("x", "y"), per_class=4, size=(16, 16))
    rows = _rows(data / "labels.csv")
    assert list(rows[0]) == ["path", "label", "group"]
    assert all((data / r["path"]).is_file() for r in rows)
    assert len({r["group"] for r in rows}) == 4  # two images per group


@pytest.mark.parametrize(
    "build",
    [
        lambda root, seed: synthetic.make_ham10000(root, per_class=2, size=(32, 24), seed=seed),
        lambda root, seed: synthetic.make_eyepacs(root, per_class=2, size=(32, 32), seed=seed),
        lambda root, seed: synthetic.make_busi(root, per_class=2, size=(32, 32), seed=seed, near_duplicates=1),
        lambda root, seed: synthetic.make_isic2018(root, per_class=1, size=(32, 24), seed=seed),
    ],
    ids=["ham10000", "eyepacs", "busi", "isic2018"],
)
def test_builders_are_deterministic_for_a_seed(tmp_path, build):
    first = _digest(build(tmp_path / "a", 7))
    assert first == _digest(build(tmp_path / "b", 7))
    assert first != _digest(build(tmp_path / "c", 8))


@pytest.mark.parametrize("style,n_classes", [("skin", 7), ("fundus", 5), ("ultrasound", 3)])
def test_classes_are_learnable_but_images_vary(style, n_classes):
    """A linear model on 8x8 thumbnails (scikit-learn) tells the classes apart on held-out images."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c in range(n_classes):
        for _ in range(30):
            images.append(synthetic.render(rng, c, (48, 48), style))
            labels.append(c)
    assert not np.array_equal(images[0], images[1]), "images of one class differ"
    thumbs = np.stack([np.asarray(Image.fromarray(a).resize((8, 8), Image.BILINEAR), dtype=np.float32) for a in images])
    features = thumbs.reshape(len(images), -1) / 255.0
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=0.5, stratify=labels,
                                                        random_state=0)
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    accuracy = model.score(x_test, y_test)
    assert accuracy > 0.6, f"{style}: held-out accuracy {accuracy:.2f} (chance {1 / n_classes:.2f})"
    # ... and not trivially: a class's mean colour alone must not already be a perfect cue.
    means = features.reshape(len(images), 64, 3).mean(axis=1)
    x_train, x_test, y_train, y_test = train_test_split(means, labels, test_size=0.5, stratify=labels, random_state=0)
    assert LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test) < 1.0
