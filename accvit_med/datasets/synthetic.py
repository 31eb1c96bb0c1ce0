"""Miniature copies of the published layouts, with synthetic images whose class can be learnt.

The real data sets cannot be downloaded on every machine (and never in CI), so tests, the demo and
benchmarks build these instead: the same folder and file names, the same CSV headers, tiny images.
Each class draws a lesion-like blob that differs in colour, outline and texture on a
modality-like background (skin, fundus, ultrasound), so a small CNN or ViT can tell the classes
apart in a few epochs -- unlike a constant colour per class, it also exercises augmentations.

Every builder is deterministic for a seed and returns the folder to pass as ``--data-dir``.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
EYEPACS_CLASSES = ("none", "mild", "moderate", "severe", "proliferative")
BUSI_CLASSES = ("benign", "malignant", "normal")
HAM_METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
ISIC_GROUND_TRUTH_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")

# Per class: blob colour (RGB), outline lobes, lobe depth, texture frequency (cycles per radius).
# Eight entries so that any user-sized class list up to eight is distinct; more classes cycle
# with a shifted hue.
_COLOURS = np.array(
    [[120, 60, 30], [200, 40, 50], [40, 30, 40], [230, 150, 170],
     [90, 110, 150], [170, 120, 60], [140, 30, 120], [60, 140, 70]], dtype=np.float32,
)
_LOBES = (0, 3, 5, 7, 4, 6, 2, 8)
_DEPTH = (0.0, 0.25, 0.15, 0.3, 0.2, 0.1, 0.35, 0.22)
_TEXTURE = (0.0, 3.0, 6.0, 1.5, 9.0, 4.5, 2.0, 7.5)
_ECHO = (45.0, 12.0, 220.0, 90.0, 150.0, 30.0, 250.0, 120.0)


def _per_class(classes: Sequence[str], per_class: int | Mapping[str, int]) -> dict[str, int]:
    if isinstance(per_class, Mapping):
        unknown = set(per_class) - set(classes)
        if unknown:
            raise ValueError(f"unknown classes {sorted(unknown)}; expected {list(classes)}")
        return {c: int(per_class.get(c, 0)) for c in classes}
    return {c: int(per_class) for c in classes}


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly enlarged by Pillow."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    return np.asarray(big, dtype=np.float32) / 255.0


def _blob(rng: np.random.Generator, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha mask (soft edge) and texture in [0, 1] of class ``index``'s lesion."""
    k = index % len(_LOBES)
    yy, xx = _grid(height, width)
    short = min(height, width)
    cy = height / 2 + rng.uniform(-0.12, 0.12) * height
    cx = width / 2 + rng.uniform(-0.12, 0.12) * width
    radius = short * rng.uniform(0.2, 0.3)
    dy, dx = yy - cy, xx - cx
    angle = np.arctan2(dy, dx)
    distance = np.hypot(dy, dx)
    phase = rng.uniform(0, 2 * math.pi)
    outline = radius * (1 + _DEPTH[k] * np.sin(_LOBES[k] * angle + phase))
    alpha = np.clip((outline - distance) / (0.08 * radius + 1.0), 0.0, 1.0)
    if _TEXTURE[k] == 0:
        texture = np.zeros_like(alpha)
    else:
        theta = rng.uniform(0, math.pi)
        along = (dx * math.cos(theta) + dy * math.sin(theta)) / radius
        if k % 2:  # stripes
            texture = 0.5 + 0.5 * np.sin(2 * math.pi * _TEXTURE[k] * along)
        else:  # dots
            across = (-dx * math.sin(theta) + dy * math.cos(theta)) / radius
            texture = (np.sin(2 * math.pi * _TEXTURE[k] * along) * np.sin(2 * math.pi * _TEXTURE[k] * across)) ** 2
    return alpha, texture


def render(
    rng: np.random.Generator, index: int, size: tuple[int, int], style: str = "skin"
) -> np.ndarray:
    """An RGB uint8 image (height, width, 3) of class ``index`` in the given ``style``.

    ``style`` is ``skin`` (dermatoscopy), ``fundus`` (retina) or ``ultrasound`` (grayscale).
    """
    width, height = size
    shade = _smooth_noise(rng, height, width)[..., None]
    grain = 6.0 * rng.standard_normal((height, width, 1), dtype=np.float32)
    colour = _COLOURS[index % len(_COLOURS)] * (1.0 + 0.15 * (index // len(_COLOURS)))
    colour = colour * rng.uniform(0.9, 1.1)
    alpha, texture = _blob(rng, index, height, width)
    alpha, texture = alpha[..., None], texture[..., None]
    if style == "skin":
        skin = np.array([225, 175, 145], dtype=np.float32) * rng.uniform(0.85, 1.05)
        background = skin * (0.85 + 0.2 * shade) + grain
        lesion = colour * (1.0 - 0.45 * texture)
    elif style == "fundus":
        yy, xx = _grid(height, width)
        disc = np.hypot(yy - height / 2, xx - width / 2) < 0.48 * min(height, width)
        retina = np.array([200, 90, 40], dtype=np.float32) * (0.7 + 0.4 * shade) + grain
        background = np.where(disc[..., None], retina, 0.0)
        lesion = (0.5 * retina + 0.5 * colour) * (1.0 - 0.5 * texture)
        alpha = alpha * disc[..., None]
    elif style == "ultrasound":
        speckle = rng.gamma(4.0, 0.25, (height, width, 1)).astype(np.float32)
        gray = (70 + 90 * shade) * speckle
        background = np.repeat(gray, 3, axis=2)
        # Echogenicity differs by class (hypoechoic, anechoic, bright tissue...), on top of shape.
        level = _ECHO[index % len(_ECHO)] * (1.0 + 0.1 * (index // len(_ECHO)))
        lesion = np.full(3, level, dtype=np.float32) * (1.0 - 0.6 * texture) * speckle
    else:
        raise ValueError(f"unknown style {style!r}; use skin, fundus or ultrasound")
    image = background * (1.0 - alpha) + lesion * alpha
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode == "RGBA":
        image = image.convert("RGBA")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)


def _corrupt(path: Path) -> None:
    """Cut an image file short, as an interrupted download does."""
    data = path.read_bytes()
    path.write_bytes(data[: max(16, len(data) // 5)])


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]], sep: str = ",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [sep.join(header)] + [sep.join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _lesions(
    rng: np.random.Generator, counts: Mapping[str, int], images_per_lesion: int
) -> list[tuple[str, str, str]]:
    """(lesion_id, image_id, dx) rows: several photos per lesion, as in HAM10000."""
    total = sum(counts.values())
    image_numbers = np.sort(rng.choice(np.arange(24306, 24306 + 20 * total + 100), total, replace=False))
    lesion_numbers = rng.choice(np.arange(1, 10 * total + 100), total, replace=False)
    rows, i, lesion = [], 0, 0
    for dx, n in counts.items():
        left = n
        while left > 0:
            take = min(left, int(rng.integers(1, images_per_lesion + 1)))
            for _ in range(take):
                rows.append((f"HAM_{lesion_numbers[lesion]:07d}", f"ISIC_{image_numbers[i]:07d}", dx))
                i += 1
            lesion += 1
            left -= take
    order = rng.permutation(len(rows))
    return [rows[j] for j in order]


def make_ham10000(
    root: str | os.PathLike,
    per_class: int | Mapping[str, int] = 4,
    seed: int = 0,
    size: tuple[int, int] = (600, 450),
    images_per_lesion: int = 3,
    metadata: str = "csv",
    mirror_copy: bool = False,
    corrupt: int = 0,
) -> Path:
    """HAM10000 as on Kaggle/Dataverse: ``HAM10000_metadata.csv`` + ``HAM10000_images_part_{1,2}/``.

    ``metadata="tab"`` writes the Dataverse ``HAM10000_metadata.tab`` (tab-separated, 8th column
    ``dataset``). ``mirror_copy`` adds a lower-case copy of part 1, as some mirrors do.
    ``corrupt`` truncates that many image files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = _per_class(HAM_CLASSES, per_class)
    rows = _lesions(rng, counts, images_per_lesion)
    image_ids = sorted(r[1] for r in rows)
    part_one = set(image_ids[: len(image_ids) // 2])
    for lesion_id, image_id, dx in rows:
        part = "HAM10000_images_part_1" if image_id in part_one else "HAM10000_images_part_2"
        _save(render(rng, HAM_CLASSES.index(dx), size, "skin"), root / part / f"{image_id}.jpg")
    table = []
    for lesion_id, image_id, dx in rows:
        age = "" if rng.random() < 0.05 else str(int(rng.integers(1, 18)) * 5)
        table.append([
            lesion_id, image_id, dx,
            str(rng.choice(["histo", "follow_up", "consensus", "confocal"])), age,
            str(rng.choice(["male", "female", "unknown"])),
            str(rng.choice(["back", "face", "lower extremity", "trunk", "scalp"])),
        ])
    if metadata == "tab":
        for row in table:
            row.append(str(rng.choice(["vidir_modern", "rosendahl", "vienna_dias", "vidir_molemax"])))
        _write_rows(root / "HAM10000_metadata.tab", (*HAM_METADATA_COLUMNS, "dataset"), table, sep="\t")
    elif metadata == "csv":
        _write_rows(root / "HAM10000_metadata.csv", HAM_METADATA_COLUMNS, table)
    else:
        raise ValueError("metadata must be 'csv' or 'tab'")
    if mirror_copy:
        shutil.copytree(root / "HAM10000_images_part_1", root / "ham10000_images_part_1")
    for image_id in image_ids[:corrupt]:
        part = "HAM10000_images_part_1" if image_id in part_one else "HAM10000_images_part_2"
        _corrupt(root / part / f"{image_id}.jpg")
    return root


def make_isic2018(
    root: str | os.PathLike,
    per_class: int | Mapping[str, int] = 4,
    seed: int = 0,
    size: tuple[int, int] = (600, 450),
    images_per_lesion: int = 3,
    lesion_groupings: bool = True,
) -> Path:
    """The ISIC 2018 Task 3 copy of HAM10000: one-hot ground truth, optional lesion groupings."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = _per_class(HAM_CLASSES, per_class)
    rows = _lesions(rng, counts, images_per_lesion)
    images = root / "ISIC2018_Task3_Training_Input"
    images.mkdir(parents=True, exist_ok=True)
    (images / "ATTRIBUTION.txt").write_text("synthetic images made by accvit-med\n")
    (images / "LICENSE.txt").write_text("CC0\n")
    truth = []
    for _lesion, image_id, dx in sorted(rows, key=lambda r: r[1]):
        _save(render(rng, HAM_CLASSES.index(dx), size, "skin"), images / f"{image_id}.jpg")
        truth.append([image_id] + ["1.0" if c.lower() == dx else "0.0" for c in ISIC_GROUND_TRUTH_COLUMNS])
    _write_rows(
        root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        ("image", *ISIC_GROUND_TRUTH_COLUMNS), truth,
    )
    if lesion_groupings:
        _write_rows(
            root / "ISIC2018_Task3_Training_LesionGroupings.csv",
            ("image", "lesion_id", "diagnosis_confirm_type"),
            [[image_id, lesion, "histopathology"] for lesion, image_id, _dx in sorted(rows, key=lambda r: r[1])],
        )
    return root


def make_eyepacs(
    root: str | os.PathLike,
    per_class: int | Mapping[str, int] = 4,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    folder: str = "train",
    extension: str = ".jpeg",
    labels_file: str = "trainLabels.csv",
    mixed_pairs: float = 0.3,
    corrupt: int = 0,
) -> Path:
    """EyePACS (Kaggle 2015): ``trainLabels.csv`` (image,level) + ``train/{patient}_{left|right}.jpeg``.

    Images come in left/right pairs per patient; ``mixed_pairs`` is the share of patients whose two
    eyes have different grades. ``labels_file="trainLabels_cropped.csv"`` adds the unnamed index
    column of that mirror; ``folder="resized_train"`` mimics the resized mirrors.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = _per_class(EYEPACS_CLASSES, per_class)
    levels = [level for level, name in enumerate(EYEPACS_CLASSES) for _ in range(counts[name])]
    # Neighbours in grade order become the two eyes of a patient (most pairs agree, as in the
    # real data); then swap right eyes between random patients to make some pairs disagree.
    pairs = [levels[i : i + 2] for i in range(0, len(levels), 2)]
    for _ in range(int(mixed_pairs * len(pairs))):
        a, b = rng.integers(0, len(pairs), 2)
        if len(pairs[a]) == 2 and len(pairs[b]) == 2:
            pairs[a][1], pairs[b][1] = pairs[b][1], pairs[a][1]
    patients = np.sort(rng.choice(np.arange(10, 10 + 5 * len(pairs) + 10), len(pairs), replace=False))
    order = rng.permutation(len(pairs))
    rows = []
    for patient, pair_index in zip(patients.tolist(), order.tolist()):
        for eye, level in zip(("left", "right"), pairs[pair_index]):
            name = f"{patient}_{eye}"
            image = render(rng, level, size, "fundus")
            if eye == "right" and rng.random() < 0.5:
                image = image[:, ::-1]  # some cameras store flipped images
            _save(np.ascontiguousarray(image), root / folder / f"{name}{extension}")
            rows.append((name, str(level)))
    if labels_file == "trainLabels_cropped.csv":
        _write_rows(root / labels_file, ("", "image", "level"), [(str(i), *r) for i, r in enumerate(rows)])
    else:
        _write_rows(root / labels_file, ("image", "level"), rows)
    for name, _level in rows[:corrupt]:
        _corrupt(root / folder / f"{name}{extension}")
    return root


def make_busi(
    root: str | os.PathLike,
    per_class: int | Mapping[str, int] = 4,
    seed: int = 0,
    size: tuple[int, int] = (200, 160),
    near_duplicates: int = 0,
    exact_duplicates: int = 0,
) -> Path:
    """BUSI: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (i).png`` with masks.

    Every image has ``<class> (i)_mask.png``; every third also ``_mask_1.png`` (a second lesion).
    Every fourth image is saved RGBA, as some real files are. ``near_duplicates`` /
    ``exact_duplicates`` append that many re-saved (slightly altered) / byte-identical copies of
    earlier images, cycling through the classes, numbered after the class's own images.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = _per_class(BUSI_CLASSES, per_class)
    base = root / "Dataset_BUSI_with_GT"
    width, height = size
    for index, name in enumerate(BUSI_CLASSES):
        for i in range(1, counts[name] + 1):
            shape = (int(width * rng.uniform(0.8, 1.2)), int(height * rng.uniform(0.8, 1.2)))
            image = render(rng, index, shape, "ultrasound")
            stem = base / name / f"{name} ({i})"
            _save(image, stem.with_name(stem.name + ".png"), "RGBA" if i % 4 == 0 else "RGB")
            mask = np.zeros(image.shape[:2], dtype=np.uint8)  # stays empty for normal tissue
            if name != "normal":
                mask[shape[1] // 3 : 2 * shape[1] // 3, shape[0] // 3 : 2 * shape[0] // 3] = 255
            _save(mask, stem.with_name(stem.name + "_mask.png"))
            if i % 3 == 0:
                _save(mask[::-1].copy(), stem.with_name(stem.name + "_mask_1.png"))
    next_number = dict(counts)
    for k in range(near_duplicates + exact_duplicates):
        name = BUSI_CLASSES[k % len(BUSI_CLASSES)]
        source = base / name / f"{name} ({1 + k // len(BUSI_CLASSES)})"
        next_number[name] += 1
        target = base / name / f"{name} ({next_number[name]})"
        if k < near_duplicates:
            pixels = np.asarray(Image.open(source.with_name(source.name + ".png")).convert("RGB")).copy()
            pixels[:2, :2] = 255 - pixels[:2, :2]  # a few changed pixels: same image to the eye
            _save(pixels, target.with_name(target.name + ".png"))
        else:
            shutil.copyfile(source.with_name(source.name + ".png"), target.with_name(target.name + ".png"))
        shutil.copyfile(source.with_name(source.name + "_mask.png"), target.with_name(target.name + "_mask.png"))
    return root


def make_image_folder(
    root: str | os.PathLike,
    classes: Sequence[str] = ("class_a", "class_b", "class_c"),
    per_class: int | Mapping[str, int] = 6,
    seed: int = 0,
    size: tuple[int, int] = (64, 64),
    extension: str = ".png",
) -> Path:
    """A user's own data, one folder per class: ``<root>/<class>/img_0001.png``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for index, (name, n) in enumerate(_per_class(classes, per_class).items()):
        for i in range(1, n + 1):
            _save(render(rng, index, size, "skin"), root / name / f"img_{i:04d}{extension}")
    return root


def make_csv_dataset(
    root: str | os.PathLike,
    classes: Sequence[str] = ("class_a", "class_b", "class_c"),
    per_class: int | Mapping[str, int] = 6,
    seed: int = 0,
    size: tuple[int, int] = (64, 64),
    images_per_group: int = 2,
    filename: str = "labels.csv",
) -> Path:
    """A user's own data as a CSV: ``<root>/labels.csv`` (path,label,group) + ``<root>/images/``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for index, (name, n) in enumerate(_per_class(classes, per_class).items()):
        for i in range(n):
            rel = f"images/{name}_{i:04d}.png"
            _save(render(rng, index, size, "skin"), root / rel)
            rows.append((rel, name, f"{name}-subject{i // images_per_group:03d}"))
    _write_rows(root / filename, ("path", "label", "group"), rows)
    return root


ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
_ISIC2019_TO_HAM = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}


def make_isic2019(
    root: str | os.PathLike,
    per_class: int | Mapping[str, int] = 3,
    seed: int = 0,
    size: tuple[int, int] = (600, 450),
    ham_root: str | os.PathLike | None = None,
    ham_images: int = 0,
    ham_lesions: int = 0,
    downsampled: int = 2,
) -> Path:
    """ISIC 2019: ``ISIC_2019_Training_Input/``, the one-hot ground truth and the metadata CSV.

    With ``ham_root`` (a :func:`make_ham10000` folder), ``ham_images`` of its images are copied in
    under their own ``ISIC_`` id and ``HAM_`` lesion id, and ``ham_lesions`` further new images
    are photos of HAM10000 lesions (a lesion id of the HAM10000 metadata, an id of their own), as
    in the real set. ``downsampled`` of the new images get the ``_downsampled`` suffix (file and
    listing, as MSK images have).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = _per_class(ISIC2019_COLUMNS[:-1], per_class)
    folder = root / "ISIC_2019_Training_Input"
    rows = []  # image, class, lesion_id
    number = 60000
    for name, n in counts.items():
        for _ in range(n):
            image = f"ISIC_{number:07d}"
            number += 1
            index = ISIC2019_COLUMNS.index(name)
            _save(render(rng, index, size, "skin"), folder / f"{image}.jpg")
            lesion = f"BCN_{number:07d}" if rng.random() < 0.8 else ""
            rows.append([image, name, lesion])
    for row in rows[:downsampled]:
        old = folder / f"{row[0]}.jpg"
        row[0] = f"{row[0]}_downsampled"
        old.rename(folder / f"{row[0]}.jpg")
    if ham_root is not None:
        ham = Path(ham_root)
        meta = [line.split(",") for line in (ham / "HAM10000_metadata.csv").read_text().splitlines()[1:]]
        to_isic = {v: k for k, v in _ISIC2019_TO_HAM.items()}
        chosen = rng.permutation(len(meta))
        for j in chosen[:ham_images].tolist():
            lesion, image, dx = meta[j][:3]
            source = next(ham.glob(f"HAM10000_images_part_*/{image}.jpg"))
            shutil.copyfile(source, folder / f"{image}.jpg")
            rows.append([image, to_isic[dx], lesion])
        for j in chosen[ham_images:ham_images + ham_lesions].tolist():
            lesion, _image, dx = meta[j][:3]
            image = f"ISIC_{number:07d}"
            number += 1
            _save(render(rng, HAM_CLASSES.index(dx), size, "skin"), folder / f"{image}.jpg")
            rows.append([image, to_isic[dx], lesion])
    rows.sort()
    truth = [[image] + ["1.0" if c == name else "0.0" for c in ISIC2019_COLUMNS] for image, name, _ in rows]
    _write_rows(root / "ISIC_2019_Training_GroundTruth.csv", ("image", *ISIC2019_COLUMNS), truth)
    metadata = []
    for image, _name, lesion in rows:
        age = "" if rng.random() < 0.1 else str(int(rng.integers(2, 18)) * 5)
        site = str(rng.choice(["anterior torso", "head/neck", "lower extremity", "upper extremity", ""]))
        metadata.append([image, age, site, lesion, str(rng.choice(["male", "female", ""]))])
    _write_rows(root / "ISIC_2019_Training_Metadata.csv",
                ("image", "age_approx", "anatom_site_general", "lesion_id", "sex"), metadata)
    return root
