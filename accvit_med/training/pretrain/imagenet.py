"""ImageNet-style folders (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) and their transforms.

The transforms are torchvision's reference presets with appendix C.1's flags: training takes a
``RandomResizedCrop`` (bicubic), a horizontal flip and TrivialAugment-wide; validation resizes the
short side to ``val_resize_size`` and takes a centre crop. (Table 4's "randaugment magnitude 15" is
torchvision's ``--ra-magnitude``, which only RandAugment reads; TrivialAugment-wide samples its own
magnitudes.) Images are normalised with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accvit_med.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from accvit_med.errors import UserError


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[name]


def train_transform(crop_size: int, interpolation: str, auto_augment: str):
    from torchvision import transforms as T

    mode = _interpolation(interpolation)
    steps = [T.RandomResizedCrop(crop_size, interpolation=mode, antialias=True), T.RandomHorizontalFlip()]
    if auto_augment == "ta_wide":
        steps.append(T.TrivialAugmentWide(interpolation=mode))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)


def eval_transform(resize_size: int, crop_size: int, interpolation: str):
    from torchvision import transforms as T

    mode = _interpolation(interpolation)
    return T.Compose(
        [
            T.Resize(resize_size, interpolation=mode, antialias=True),
            T.CenterCrop(crop_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class folder names of ``split_dir`` (hidden folders ignored)."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_layout(data_path: str | Path, splits: tuple[str, ...] = ("train", "val")) -> list[str]:
    """Check ``data_path`` has ``splits`` with the same class folders; return the class names."""
    root = Path(data_path)
    if not root.is_dir():
        raise UserError(f"--data-path {root} is not a folder; point it at the folder that holds train/ and val/")
    classes: dict[str, list[str]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(
                f"{split_dir} is missing; an ImageNet-style --data-path holds {'/ and '.join(splits)}/ "
                f"with one folder per class"
            )
        found = class_folders(split_dir)
        if not found:
            hint = (
                " (ImageNet's official val/ is flat: sort its images into val/<wnid>/ first, e.g. with "
                "the valprep.sh script torchvision's reference points to)"
                if split == "val"
                else ""
            )
            raise UserError(f"{split_dir} has no class folders; put images in {split_dir}/<class>/{hint}")
        classes[split] = found
    reference = classes[splits[0]]
    for split in splits[1:]:
        if classes[split] != reference:
            only_ref = sorted(set(reference) - set(classes[split]))
            only_here = sorted(set(classes[split]) - set(reference))
            raise UserError(
                f"class folders differ between {splits[0]}/ and {split}/ under {root}: "
                f"only in {splits[0]}/: {_few(only_ref)}; only in {split}/: {_few(only_here)}; "
                f"both must hold the same classes"
            )
    return reference


def _few(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def policy_loader(path: str):
    from accvit_med.datasets.imagepolicy import open_image
    from accvit_med.datasets.torchdata import ImageReadError

    try:
        return open_image(path).convert("RGB")
    except UserError as err:  # re-raised from a DataLoader worker as one line (see ImageReadError)
        raise ImageReadError(str(err)) from None


def _is_image_file(path: str, split_dir: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from accvit_med.datasets.imagepolicy import is_candidate

    return path.lower().endswith(IMG_EXTENSIONS) and is_candidate(path, split_dir)


def image_folder(split_dir: Path, transform):
    """torchvision's ImageFolder on ``split_dir``, with its errors turned into UserErrors."""
    from torchvision.datasets import ImageFolder

    try:
        # The image policy: no hidden/AppleDouble files, upright, one-line errors for bad images.
        return ImageFolder(str(split_dir), transform=transform, loader=policy_loader,
                           is_valid_file=lambda p: _is_image_file(p, split_dir))
    except FileNotFoundError as err:
        raise UserError(f"{split_dir}: {err}; every class folder needs at least one image") from None


@dataclass
class ImageNetFolders:
    classes: list[str]
    train: object | None
    val: object


def load_imagenet_folders(data_path: str | Path, recipe, *, train: bool = True) -> ImageNetFolders:
    """The train (optional) and val datasets of an ImageNet-style folder, with ``recipe``'s transforms."""
    root = Path(data_path)
    splits = ("train", "val") if train else ("val",)
    classes = check_layout(root, splits)
    val = image_folder(root / "val", eval_transform(recipe.val_resize_size, recipe.val_crop_size, recipe.interpolation))
    train_set = (
        image_folder(root / "train", train_transform(recipe.train_crop_size, recipe.interpolation, recipe.auto_augment))
        if train
        else None
    )
    return ImageNetFolders(classes=classes, train=train_set, val=val)
