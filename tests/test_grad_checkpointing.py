"""Activation checkpointing changes memory, never results: outputs, gradients, BatchNorm statistics
and state-dict keys match the plain model, for every registry family, and finetune records it.

Small instances of the same block classes keep this fast; block counts are checked on the real
registry models (built, not run).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision.models as tvm
from torchvision.models.convnext import CNBlockConfig

from accvit_med.errors import UserError
from accvit_med.models import create_model
from accvit_med.models.acc_vit import ACCViT, ACCViTConfig
from accvit_med.models.activation_checkpointing import enable_activation_checkpointing
from accvit_med.training.finetune import finetune
from accvit_med.training.recipe import FinetuneConfig


def small_accvit(num_classes: int = 3) -> torch.nn.Module:
    # Drop path on: the recomputation must replay the same random drops.
    return ACCViT(ACCViTConfig(8, (8, 8, 8, 8), (1, 2, 1, 1), 8, 0.2), num_classes=num_classes)


def small_convnext(num_classes: int = 3) -> torch.nn.Module:
    return tvm.ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)], stochastic_depth_prob=0.2,
                        num_classes=num_classes)


FAMILIES = {
    # name: (model builder, input side, blocks)
    "accvit": (small_accvit, 224, 5),
    "swin": (lambda: tvm.SwinTransformer([4, 4], 16, [2, 2], [2, 2], [4, 4], stochastic_depth_prob=0.2,
                                         num_classes=3), 32, 4),
    "convnext": (small_convnext, 32, 3),
    "maxvit": (lambda: tvm.MaxVit((32, 32), 8, 2, [8, 16], [1, 2], 4, 0.2, num_classes=3), 32, 3),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_same_outputs_gradients_and_statistics(family):
    build, side, blocks = FAMILIES[family]
    torch.manual_seed(0)
    plain = build().train()
    checkpointed = copy.deepcopy(plain)
    keys = list(checkpointed.state_dict())
    assert enable_activation_checkpointing(checkpointed) == blocks
    assert list(checkpointed.state_dict()) == keys
    images = torch.randn(2, 3, side, side)
    outputs = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # same stochastic-depth draws in both
        out = model(images)
        out.square().sum().backward()
        outputs.append(out)
    assert torch.equal(outputs[0], outputs[1])
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.equal(p.grad, q.grad), name
    # BatchNorm running statistics are updated once per step, not again by the recomputation.
    for (name, b), c in zip(plain.named_buffers(), checkpointed.named_buffers()):
        assert torch.equal(b, c[1]), name


def test_inactive_without_autograd_and_idempotent():
    model = small_convnext().eval()
    assert enable_activation_checkpointing(model) == 3
    assert enable_activation_checkpointing(model) == 0  # already wrapped
    with torch.no_grad():
        reference = copy.deepcopy(model)
        images = torch.randn(1, 3, 32, 32)
        assert torch.equal(model(images), reference(images))
    # A deep copy checkpoints its own blocks, not the original's.
    clone = copy.deepcopy(model)
    block = next(m for m in clone.modules() if type(m).__name__ == "CNBlock")
    assert block.forward.__self__ is block


@pytest.mark.parametrize("name, blocks", [("accvit_femto", 8), ("swin_t", 12), ("convnext_tiny", 18), ("maxvit_t", 11)])
def test_registry_models_wrap_every_block(name, blocks):
    # Depths from the papers / torchvision: femto 1+2+4+1, Swin-T 2+2+6+2, ConvNeXt-T 3+3+9+3, MaxViT-T 2+2+5+2.
    assert enable_activation_checkpointing(create_model(name, num_classes=2)) == blocks


@pytest.fixture(scope="module")
def toy_split(make_split):
    return make_split(("a", "b"), 6, size=(40, 36), seed=1)


def tiny_config(split, **overrides) -> FinetuneConfig:
    values = dict(split=str(split), model="small_convnext", weights="none", epochs=1, batch_size=4, lr=3e-3,
                  image_size=32, workers=0, seed=7)
    return FinetuneConfig(**{**values, **overrides}).validate()


def test_finetune_with_checkpointing_trains_identically(toy_split, tmp_path):
    plain = finetune(tiny_config(toy_split), out=str(tmp_path / "plain"), model_factory=small_convnext)
    checkpointed = finetune(tiny_config(toy_split, grad_checkpointing=True), out=str(tmp_path / "ckpt"),
                            model_factory=small_convnext)
    assert checkpointed.history[0]["train_loss"] == plain.history[0]["train_loss"]
    assert checkpointed.history[0]["val_loss"] == plain.history[0]["val_loss"]
    assert checkpointed.metrics["accuracy"] == plain.metrics["accuracy"]
    recorded = json.loads((tmp_path / "ckpt" / "config.json").read_text())["recipe"]
    assert recorded["grad_checkpointing"] is True
    # Checkpoints load into a plain model: the state-dict keys are unchanged.
    state = torch.load(tmp_path / "ckpt" / "checkpoints" / "best.pt", weights_only=True)["model"]
    small_convnext(2).load_state_dict(state)


def test_network_without_known_blocks_is_refused_before_writing(toy_split, tmp_path):
    def linear_net(num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, num_classes))

    with pytest.raises(UserError, match="--grad-checkpointing found no"):
        finetune(tiny_config(toy_split, grad_checkpointing=True), out=str(tmp_path / "run"), model_factory=linear_net)
    assert not (tmp_path / "run").exists()
