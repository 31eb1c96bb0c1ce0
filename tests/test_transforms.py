"""The fixed geometry matches torchvision's Resize + CenterCrop; normalisation is ImageNet's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from accvit_med.datasets.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    resize_and_center_crop,
    train_transform,
)


@pytest.mark.parametrize("size", [(600, 450), (450, 600), (300, 300), (97, 130), (3000, 2001)])
def test_geometry_equals_torchvision_resize_center_crop(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    reference = T.Compose([T.Resize(224, interpolation=InterpolationMode.BICUBIC), T.CenterCrop(224)])(image)
    ours = resize_and_center_crop(image, 224)
    assert ours.size == (224, 224)
    assert np.array_equal(np.asarray(ours), np.asarray(reference))


def test_eval_transform_is_imagenet_normalisation():
    image = Image.new("RGB", (8, 8), (255, 128, 0))
    tensor = eval_transform()(image)
    expected = (torch.tensor([255, 128, 0]) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(tensor[:, 3, 3], expected.float())


def test_train_transform_augments_and_keeps_the_shape():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    torch.manual_seed(0)
    outputs = [train_transform()(image) for _ in range(4)]
    assert all(o.shape == (3, 32, 32) for o in outputs)
    assert any(not torch.equal(outputs[0], o) for o in outputs[1:])  # RandAugment is random
    # Without RandAugment ops the train transform is exactly the evaluation one.
    assert torch.equal(train_transform(randaugment_ops=0)(image), eval_transform()(image))
