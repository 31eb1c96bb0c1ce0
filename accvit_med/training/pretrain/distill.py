"""Knowledge distillation for ``accvit-med pretrain --teacher NAME``.

The student learns the teacher's soft predictions: ``T^2 * KL(softmax(t/T) || softmax(s/T))`` at
temperature ``T`` (Hinton et al. 2015; the ``T^2`` keeps gradient sizes comparable across
temperatures), mixed with the label loss as ``w * distillation + (1 - w) * label loss``. With
``w = 1`` (the default, the "function matching" of Beyer et al. 2022) no labels are needed, so any
folder of images works: an ImageNet-style folder, or a plain folder of images (searched
recursively; every 10th image, in sorted order, is held out to measure agreement).

The teacher is a baseline with ImageNet-1k weights (``maxvit_t``, ``swin_t``, ``convnext_tiny``,
any ``torchvision:`` classifier, a ``timm:`` one whose weights predict ImageNet-1k), kept in eval
mode without gradients; a timm teacher trained on other statistics gets its inputs renormalised
(:class:`Renormalise`). The student gets the teacher's 1000-class head. Each epoch logs the
student-teacher top-1 agreement on the held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from accvit_med.errors import UserError

HOLDOUT_EVERY = 10  # plain folders: every 10th image (sorted) measures agreement, the rest trains


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                      weight: float, targets: Optional[torch.Tensor] = None,
                      criterion: Optional[nn.Module] = None) -> torch.Tensor:
    """``weight * T^2 * KL(teacher || student) + (1 - weight) * criterion(student, targets)``.

    Args:
        student_logits, teacher_logits: ``(B, classes)``.
        temperature: softens both distributions (T > 0).
        weight: share of the distillation term in [0, 1]; 1 needs no targets.
        targets, criterion: the label loss (e.g. cross-entropy on mixed soft targets).
    """
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature**2
    if weight >= 1.0:
        return soft
    return weight * soft + (1.0 - weight) * criterion(student_logits, targets)


def check_teacher(name: str) -> None:
    """UserError unless ``name`` is a baseline with pretrained ImageNet-1k weights: a registry or
    ``torchvision:`` model with torchvision's, or a ``timm:`` model whose weights predict ImageNet-1k."""
    from accvit_med.models import zoo
    from accvit_med.models.registry import imagenet_weights_enum, list_models, model_info

    info = model_info(name)
    parsed = zoo.parse(name)
    if parsed is not None and parsed[0] == "timm":
        _check_timm_teacher(name, parsed[1])
        return
    if info.family == "accvit" or imagenet_weights_enum(name) is None:
        baselines = [m for m in list_models() if model_info(m).imagenet_weights is not None]
        raise UserError(f"--teacher {name} has no ImageNet weights to teach with; choose one of "
                        f"{', '.join(baselines)}, or a torchvision: or timm: classifier")


def _check_timm_teacher(name: str, arch: str) -> None:
    from accvit_med.models import zoo

    timm = zoo.timm_module()
    if zoo.pretrained_weights("timm", arch) is None:
        raise UserError(f"--teacher {name} has no pretrained weights on the Hugging Face hub to teach with")
    cfg = timm.models.get_pretrained_cfg(arch)
    classes = None if cfg is None else cfg.num_classes
    if classes != 1000:
        raise UserError(f"--teacher {name} predicts {classes} classes; a teacher must predict ImageNet-1k's "
                        "1000 (e.g. timm:resnet50.a1_in1k)")


class Renormalise(nn.Module):
    """Feeds a teacher trained on other statistics: inputs normalised with ``given`` are mapped back
    to pixels and normalised with ``wanted`` (exactly, so the student's data pipeline stays one)."""

    def __init__(self, model: nn.Module, given, wanted) -> None:
        super().__init__()
        self.model = model
        view = (1, 3, 1, 1)
        self.register_buffer("scale", (torch.tensor(given.std) / torch.tensor(wanted.std)).view(view))
        self.register_buffer("shift", ((torch.tensor(given.mean) - torch.tensor(wanted.mean))
                                       / torch.tensor(wanted.std)).view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def load_teacher(name: str, device: torch.device) -> nn.Module:
    """The teacher with its ImageNet weights (torch.hub or Hugging Face cache), in eval mode and
    without gradients, taking inputs with ImageNet's normalisation (as the student's)."""
    from accvit_med.datasets.transforms import IMAGENET, Normalisation
    from accvit_med.models import create

    check_teacher(name)
    created = create(name, num_classes=1000, weights="imagenet")
    teacher = created.model
    own = Normalisation.of_weights({"preprocessing": created.weights.preprocessing})
    if own != IMAGENET:
        teacher = Renormalise(teacher, IMAGENET, own)
    teacher = teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def teacher_classes(name: str) -> list[str]:
    """The teacher's class names, in its output order: torchvision's ImageNet categories, or timm's
    ImageNet-1k descriptions (their first synonym)."""
    from accvit_med.models import zoo
    from accvit_med.models.registry import imagenet_weights_enum

    parsed = zoo.parse(name)
    if parsed is not None and parsed[0] == "timm":
        info = zoo.timm_module().data.ImageNetInfo("imagenet-1k")
        return [description.split(",")[0].strip() for description in info.label_descriptions()]
    return list(imagenet_weights_enum(name).meta["categories"])


class ImageFiles(Dataset):
    """Unlabelled images: ``(transform(image), -1)`` per file."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from accvit_med.training.pretrain.imagenet import policy_loader

        return self.transform(policy_loader(str(self.paths[index]))), -1


@dataclass
class DistillationData:
    classes: list[str]  # the student's (= teacher's) output classes
    labelled: bool  # True when the folder's classes are the teacher's (label loss and top-1 possible)
    train: Dataset
    val: Dataset


def load_distillation_data(data_path: str | Path, recipe, teacher: str) -> DistillationData:
    """Images to distil on: an ImageNet-style folder (labels used when its classes are the
    teacher's), or with ``distill_weight`` 1 any folder of images."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from accvit_med.training.pretrain.imagenet import eval_transform, load_imagenet_folders, train_transform

    root = Path(data_path)
    classes = teacher_classes(teacher)
    if (root / "train").is_dir() and (root / "val").is_dir():
        folders = load_imagenet_folders(root, recipe)
        labelled = len(folders.classes) == len(classes)
        if not labelled and recipe.distill_weight < 1:
            raise UserError(
                f"{root} has {len(folders.classes)} classes, the teacher {teacher} {len(classes)}: the label loss "
                "needs the teacher's classes; pass --distill-weight 1 (no labels) or the teacher's data set"
            )
        return DistillationData(classes, labelled, folders.train, folders.val)
    if recipe.distill_weight < 1:
        raise UserError(f"--distill-weight {recipe.distill_weight} needs labels: an ImageNet-style --data-path with "
                        "train/ and val/; pass --distill-weight 1 to distil on a plain image folder")
    if not root.is_dir():
        raise UserError(f"--data-path {root} is not a folder; point it at a folder of images")
    from accvit_med.datasets.imagepolicy import is_candidate

    # The project's image policy decides what is an input (no hidden files, AppleDouble, our cache).
    paths = sorted(p for p in root.rglob("*")
                   if p.suffix.lower() in IMG_EXTENSIONS and p.is_file() and is_candidate(p, root))
    if len(paths) < 2:
        raise UserError(f"--data-path {root} holds {len(paths)} image(s); distillation needs at least 2")
    val = paths[::HOLDOUT_EVERY]
    train = [p for i, p in enumerate(paths) if i % HOLDOUT_EVERY]
    return DistillationData(
        classes, False,
        ImageFiles(train, train_transform(recipe.train_crop_size, recipe.interpolation, recipe.auto_augment)),
        ImageFiles(val, eval_transform(recipe.val_resize_size, recipe.val_crop_size, recipe.interpolation)),
    )
