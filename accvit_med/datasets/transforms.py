"""Image transforms for fine-tuning: one fixed geometry step, then augmentation and normalisation.

The pipeline is split in two on purpose:

1. :func:`resize_and_center_crop` — deterministic geometry (shorter side to ``size`` with bicubic
   resampling, then a centred ``size x size`` crop, as torchvision's ImageNet evaluation transform
   for MaxViT). Its output is what the image cache stores, so a cached run sees exactly the pixels
   an uncached run sees.
2. :func:`train_transform` / :func:`eval_transform` — on the ``size x size`` image: RandAugment
   (training only; appendix C.2 uses no other augmentation), then the normalisation the starting
   weights were trained with (:class:`Normalisation`: ImageNet's statistics, or a zoo model's own).

The geometry is the toolkit's for every model, zoo models included (their weights' metadata also
names an interpolation and a crop fraction): every model of a comparison sees the same pixels, and
the image cache holds one copy of them. The normalisation is the weights', because a backbone
pretrained on other statistics (a ViT with mean = std = 0.5, say) starts from shifted features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

from PIL import Image

if TYPE_CHECKING:
    from torchvision import transforms as T

# The statistics every ImageNet-pretrained torchvision backbone (and ACC-ViT) was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std, on pixels scaled to [0, 1]."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def of_weights(cls, weights: Optional[Mapping[str, Any]]) -> "Normalisation":
        """The statistics recorded with a run's starting weights (``config.json``'s ``weights``:
        a zoo model's ``preprocessing``), else ImageNet's (the built-in models, random starts)."""
        preprocessing = (weights or {}).get("preprocessing") or {}
        if "mean" not in preprocessing or "std" not in preprocessing:
            return cls()
        mean, std = (tuple(float(v) for v in preprocessing[key]) for key in ("mean", "std"))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"the weights' preprocessing has an unusable mean {mean} or std {std}")
        return cls(mean, std)


IMAGENET = Normalisation()

# Bumped whenever resize_and_center_crop changes, so stale cache entries are never reused.
GEOMETRY_VERSION = "shorter-side-bicubic-center-crop-v1"


def resize_and_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic) and crop the centred ``size x size`` square."""
    width, height = image.size
    # Round like torchvision's Resize so the result matches T.Resize(size) + T.CenterCrop(size).
    new_w, new_h = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


# torchvision is imported by the functions that build a torch transform: the geometry step above
# also serves ONNX Runtime inference, which runs without torch.
def _normalise(normalisation: Normalisation) -> T.Compose:
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(normalisation.mean, normalisation.std)])


def train_transform(randaugment_ops: int = 2, randaugment_magnitude: int = 9,
                    normalisation: Normalisation = IMAGENET) -> T.Compose:
    """RandAugment then normalisation, for an image already at its final size."""
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    ops = []
    if randaugment_ops > 0:
        ops.append(
            T.RandAugment(
                num_ops=randaugment_ops,
                magnitude=randaugment_magnitude,
                interpolation=InterpolationMode.BILINEAR,
            )
        )
    return T.Compose(ops + [_normalise(normalisation)])


def eval_transform(normalisation: Normalisation = IMAGENET) -> T.Compose:
    """Normalisation only, for an image already at its final size."""
    return _normalise(normalisation)
