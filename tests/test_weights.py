"""weights="imagenet" through torch.hub's cache, weights=PATH (.pth / .safetensors), head swap."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from safetensors.torch import save_file

from accvit_med.errors import UserError
from accvit_med.models import create_model, imagenet_weights_cached, reset_classifier
from accvit_med.models.registry import imagenet_weights_enum


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME, and no network: a download attempt fails like it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def _cache_file(torch_home: Path, name: str) -> Path:
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / os.path.basename(imagenet_weights_enum(name).url)


@pytest.mark.parametrize("name", ["convnext_tiny"])  # one baseline: swin_t would double the cost
def test_imagenet_weights_are_served_from_the_hub_cache(torch_home, name):
    torch.manual_seed(0)
    source = create_model(name).eval()
    torch.save(source.state_dict(), _cache_file(torch_home, name))
    assert imagenet_weights_cached(name)
    loaded = create_model(name, weights="imagenet").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
        # Another class count: the backbone is the ImageNet one, the head is new.
        adapted = create_model(name, num_classes=3, weights="imagenet").eval()
        assert adapted(x).shape == (2, 3)
    backbone = {k: v for k, v in source.state_dict().items() if not k.startswith(("head.", "classifier.2."))}
    adapted_state = adapted.state_dict()
    assert all(torch.equal(adapted_state[k], v) for k, v in backbone.items())


def test_missing_imagenet_file_offline_names_file_folder_and_url(torch_home):
    with pytest.raises(UserError) as caught:
        create_model("convnext_tiny", num_classes=2, weights="imagenet")
    message = str(caught.value)
    assert "convnext_tiny-983f1562.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/convnext_tiny-983f1562.pth" in message
    assert "\n" not in message
    assert not imagenet_weights_cached("convnext_tiny")


def test_acc_vit_wider_than_maxvit_refuses_imagenet_and_names_alternatives():
    # weights="imagenet" for ACC-ViT means inheritance from MaxViT-T (tests/test_inheritance.py).
    with pytest.raises(UserError, match="wider than MaxViT-T.*accvit_tiny or accvit_nano.*--teacher maxvit_t"):
        create_model("accvit_small", weights="imagenet")


@pytest.fixture(scope="module")
def femto() -> torch.nn.Module:
    torch.manual_seed(1)
    model = create_model("accvit_femto", num_classes=4).eval()
    with torch.no_grad():  # non-default BN statistics, so buffers must travel too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("layout", ["pth", "training_checkpoint", "state_dict_wrapper", "safetensors", "ddp"])
def test_local_weights_give_identical_outputs(tmp_path, femto, image, layout):
    state = femto.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        payload = {
            "pth": state,
            "training_checkpoint": {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3},
            "state_dict_wrapper": {"state_dict": state},
            "ddp": {f"module.{k}": v for k, v in state.items()},
        }[layout]
        torch.save(payload, path)
    loaded = create_model("accvit_femto", num_classes=4, weights=path).eval()
    loaded_state = loaded.state_dict()
    assert all(torch.equal(loaded_state[k], v) for k, v in state.items())
    if layout == "training_checkpoint":  # the layout fine-tuning writes: check the outputs too
        with torch.no_grad():
            assert torch.equal(loaded(image), femto(image))


def test_other_class_count_swaps_the_head_and_says_so(tmp_path, femto, caplog):
    path = tmp_path / "w.pth"
    torch.save(femto.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="accvit_med.models.weights"):
        loaded = create_model("accvit_femto", num_classes=9, weights=path)
    assert "head replaced (checkpoint has 4 classes, model has 9)" in caplog.text
    assert loaded.classifier[5].out_features == 9
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in femto.state_dict().items() if not k.startswith("classifier.5"))


def test_missing_and_unexpected_keys_are_reported(tmp_path, femto, caplog):
    state = dict(femto.state_dict())
    del state["stages.3.0.mlp.1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with caplog.at_level(logging.WARNING, logger="accvit_med.models.weights"):
        create_model("accvit_femto", num_classes=4, weights=path)
    assert "1 keys missing" in caplog.text and "stages.3.0.mlp.1.weight" in caplog.text
    assert "1 unexpected keys ignored: extra.weight" in caplog.text


def test_wrong_architecture_is_a_user_error(tmp_path, femto):
    path = tmp_path / "w.pth"
    torch.save(femto.state_dict(), path)
    with pytest.raises(UserError, match="does not fit this model: tensor shapes differ"):
        create_model("accvit_pico", num_classes=4, weights=path)
    with pytest.raises(UserError, match="shares no parameter name"):
        create_model("convnext_tiny", num_classes=4, weights=path)


class NotATensor:
    pass


def test_checkpoints_are_never_unpickled_as_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(UserError, match="cannot load .*evil.pth as a weights-only checkpoint"):
        create_model("accvit_femto", weights=path)


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create_model("accvit_femto", weights=tmp_path / "nope.pth")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read .* as safetensors"):
        create_model("accvit_femto", weights=broken)


def test_reset_classifier_replaces_only_the_last_linear():
    model = create_model("convnext_tiny", num_classes=1000)
    before = model.classifier[0].weight.clone()
    reset_classifier(model, 5)
    assert model.classifier[2].out_features == 5 and torch.equal(model.classifier[0].weight, before)
