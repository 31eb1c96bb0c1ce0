"""Zoo models (``torchvision:<name>``, ``timm:<name>``): names, weights through the libraries' caches
with downloads forbidden, head reset, recorded preprocessing, weight decay, checkpointing, Grad-CAM.

The weights are made here: a model built with random weights and saved under the cache layout the
library reads (torch.hub's ``checkpoints/<file>``; the Hugging Face cache's
``models--timm--<name>/snapshots/<rev>/model.safetensors`` with ``refs/main``). The references are
the libraries themselves: torchvision's and timm's own models, weights metadata and data config.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
import torchvision
from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import create, create_model, model_info
from accvit_med.models.registry import check_image_size, classifier_head, gradcam_layer

timm = pytest.importorskip("timm", reason="timm is the optional extra accvit-med[timm]")


def _no_download(*args, **kwargs):
    raise AssertionError("a test tried to download")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    return tmp_path / "torch"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_download)
    return cache


def _save_hf(cache, repo_id: str, state: dict[str, torch.Tensor], revision: str = "0123abcd"):
    from safetensors.torch import save_file

    folder = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    path = snapshot / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_zoo_names_and_one_line_refusals():
    assert model_info("torchvision:densenet121").family == "torchvision"
    assert model_info("timm:resnet50.a1_in1k").family == "timm"
    assert model_info("timm:resnet18").imagenet_weights == "timm/resnet18.a1_in1k"
    for name, expected in [("torchvision:densenet12", "did you mean torchvision:densenet121"),
                           ("timm:resnet_18", "timm has no model 'resnet_18'"),
                           ("keras:resnet50", "write torchvision:<name> or timm:<name>")]:
        with pytest.raises(UserError, match=expected) as caught:
            model_info(name)
        assert "\n" not in str(caught.value)


def test_torchvision_weights_come_from_the_hub_cache_with_the_head_reset(torch_home):
    enum = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v3_small(num_classes=1000)
    file = torch_home / "hub" / "checkpoints" / os.path.basename(enum.url)
    file.parent.mkdir(parents=True)
    torch.save(source.state_dict(), file)
    created = create("torchvision:mobilenet_v3_small", num_classes=3, weights="imagenet")
    ours = created.model.state_dict()
    head_name, head = classifier_head(created.model)
    assert head_name == "classifier.3" and head.out_features == 3
    copied = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.3.")}
    assert all(torch.equal(ours[k], v) for k, v in copied.items())
    record = created.weights.to_record()
    assert record["file"] == str(file) and record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    transform = enum.transforms()  # torchvision's own preprocessing of these weights
    assert record["preprocessing"] == {"input_size": transform.crop_size[0], "resize_size": transform.resize_size[0],
                                       "mean": transform.mean, "std": transform.std, "interpolation": "bilinear"}


def test_missing_torchvision_file_offline_names_file_folder_and_torch_home(torch_home, monkeypatch):
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as caught:
        create_model("torchvision:densenet121", num_classes=2, weights="imagenet")
    message = str(caught.value)
    assert "densenet121-a639ec97.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    assert "TORCH_HOME" in message and "\n" not in message


def test_timm_weights_come_from_the_hugging_face_cache_with_the_head_reset(hf_cache):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)
    file = _save_hf(hf_cache, "timm/resnet18.a1_in1k", source.state_dict())
    created = create("timm:resnet18", num_classes=4, weights="imagenet")
    ours = created.model.state_dict()
    assert created.model.get_classifier().out_features == 4
    copied = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert set(copied) < set(ours) and all(torch.equal(ours[k], v) for k, v in copied.items())
    record = created.weights.to_record()
    assert record["file"] == str(file) and record["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    expected = timm.data.resolve_data_config({}, model=source)  # timm's own preprocessing of these weights
    assert record["preprocessing"]["input_size"] == expected["input_size"][-1]
    assert record["preprocessing"]["interpolation"] == expected["interpolation"] == "bicubic"
    assert tuple(record["preprocessing"]["mean"]) == expected["mean"]


def test_timm_weights_missing_offline_name_repo_cache_and_variables(hf_cache):
    with pytest.raises(UserError) as caught:
        create_model("timm:resnet18", num_classes=2, weights="imagenet")
    message = str(caught.value)
    for part in ("timm/resnet18.a1_in1k", "model.safetensors", str(hf_cache), "HF_HUB_OFFLINE", "HF_HOME"):
        assert part in message
    assert "\n" not in message


def test_zoo_models_get_weight_decay_groups_and_checkpointing():
    from accvit_med.models.activation_checkpointing import enable_activation_checkpointing
    from accvit_med.training.pretrain.param_groups import no_weight_decay_names

    vit = create_model("timm:vit_tiny_patch16_224", num_classes=2)
    excluded = set(no_weight_decay_names(vit))
    assert {"cls_token", "pos_embed"} <= excluded  # timm's own no_weight_decay()
    assert {n for n, p in vit.named_parameters() if p.ndim <= 1} <= excluded
    assert not {n for n, p in vit.named_parameters() if p.ndim >= 2} - {"cls_token", "pos_embed"} & excluded
    resnet = create_model("timm:resnet18", num_classes=2)
    assert enable_activation_checkpointing(resnet) >= 1 and resnet.grad_checkpointing


@pytest.mark.parametrize("name, path, channels_last, prefix", [
    ("timm:resnet18", "layer4", False, None),
    ("torchvision:densenet121", "features", False, None),
    ("torchvision:maxvit_t", "blocks.3", False, None),
    ("torchvision:swin_t", "permute", False, None),
    ("timm:vit_tiny_patch16_224", "blocks.11.norm1", False, 1),
    ("timm:deit_tiny_distilled_patch16_224", "blocks.11.norm1", False, 2),
])
def test_gradcam_layer_per_architecture_kind(name, path, channels_last, prefix):
    layer = gradcam_layer(name)
    assert (layer.path, layer.channels_last, layer.prefix_tokens) == (path, channels_last, prefix)


def test_gradcam_of_a_vit_drops_the_class_token_and_maps_the_grid():
    from accvit_med.interpret import CamTarget, grad_cam

    torch.manual_seed(0)
    # Built for 64x64 inputs (a 4x4 patch grid); timm starts the head at zero, so it gets weights.
    model = create_model("timm:vit_tiny_patch16_224", num_classes=3, image_size=64).eval()
    nn.init.normal_(model.get_classifier().weight, std=0.5)
    images = torch.randn(2, 3, 64, 64)
    layer = gradcam_layer("timm:vit_tiny_patch16_224")
    result = grad_cam(model, images, CamTarget(layer.path, prefix_tokens=layer.prefix_tokens), class_index=1)
    # The reference: the same weighted sum written on the 14x14 patch grid by hand.
    captured = []
    handle = model.get_submodule(layer.path).register_forward_hook(lambda m, i, o: captured.append(o))
    logits = model(images)
    handle.remove()
    (grads,) = torch.autograd.grad(logits[:, 1].sum(), captured[0])
    acts, grads = captured[0][:, 1:].reshape(2, 4, 4, -1), grads[:, 1:].reshape(2, 4, 4, -1)
    cam = torch.relu((grads.mean(dim=(1, 2), keepdim=True) * acts).sum(-1))[:, None]
    cam = nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert (cam.amax(dim=(1, 2)) > 0).all()
    cam = cam / cam.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(result.maps, cam.detach(), rtol=1e-4, atol=1e-5)


def test_input_sizes_a_zoo_model_cannot_take_are_one_line():
    check_image_size("timm:resnet18", 64)
    with pytest.raises(UserError, match=r"torchvision:vit_b_16 cannot take 64x64 images") as caught:
        check_image_size("torchvision:vit_b_16", 64)
    assert "\n" not in str(caught.value)


def test_models_command_lists_a_zoo():
    from typer.testing import CliRunner

    from accvit_med.cli import app

    result = CliRunner().invoke(app, ["models", "--zoo", "timm", "--filter", "resnet18"])
    assert result.exit_code == 0, result.output
    listed = result.stdout.split()
    assert listed == [f"timm:{n}" for n in timm.list_models("*resnet18*", pretrained=True)]
    assert "timm:resnet18.a1_in1k" in listed
    result = CliRunner().invoke(app, ["models", "--zoo", "torchvision", "--filter", "DenseNet"])
    assert result.stdout.split() == [f"torchvision:{n}" for n in torchvision.models.list_models(include="densenet*")]


@pytest.mark.parametrize("model, weights", [("timm:resnet18", "imagenet"), ("torchvision:mobilenet_v3_small", "none")])
def test_finetune_then_predict_and_gradcam_a_zoo_model_through_the_cli(model, weights, make_split, hf_cache, tmp_path):
    import json

    from typer.testing import CliRunner

    from accvit_med.cli import app

    if weights == "imagenet":
        _save_hf(hf_cache, "timm/resnet18.a1_in1k", timm.create_model("resnet18").state_dict())
    runner = CliRunner()
    split = make_split(("a", "b"), 3, size=(40, 40), seed=4)
    out = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "--split", str(split), "--model", model, "--weights", weights,
                                 "--epochs", "1", "--batch-size", "3", "--image-size", "64", "--workers", "0",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == model and config["weights"]["spec"] == weights
    if weights == "imagenet":
        assert config["weights"]["preprocessing"]["interpolation"] == "bicubic"
    images = sorted((split.parent / "images").rglob("*.png"))
    result = runner.invoke(app, ["predict", "--run", str(out), str(images[0]), str(images[-1]),
                                 "--out", str(tmp_path / "preds.csv"), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 3
    result = runner.invoke(app, ["gradcam", "--run", str(out), str(images[0]), "--out", str(tmp_path / "cams"),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "cams").rglob("*.png"))


def test_a_zoo_models_own_mean_and_std_feed_training_prediction_and_evaluation(make_split, hf_cache, tmp_path):
    """A timm ViT pretrained with mean = std = 0.5: the run's predictions on test, ``predict`` and
    the loaded run's input all equal torchvision's ToTensor + Normalize with the statistics of timm's
    own pretrained_cfg, applied to the run's pixels, and not ImageNet's."""
    import json

    import pandas as pd
    from torchvision import transforms as T
    from typer.testing import CliRunner

    from accvit_med.cli import app
    from accvit_med.datasets.cache import decode_resized
    from accvit_med.datasets.transforms import IMAGENET_MEAN
    from accvit_med.interpret.run import load_run

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    reference = timm.create_model(name, pretrained=False)
    mean, std = reference.pretrained_cfg["mean"], reference.pretrained_cfg["std"]
    assert tuple(mean) != IMAGENET_MEAN  # the case this test is about
    _save_hf(hf_cache, f"timm/{name}", reference.state_dict())
    split = make_split(("a", "b"), 3, size=(40, 40), seed=5)
    out, runner = tmp_path / "run", CliRunner()
    result = runner.invoke(app, ["finetune", "--split", str(split), "--model", f"timm:{name}", "--epochs", "1",
                                 "--batch-size", "3", "--image-size", "64", "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "config.json").read_text())["weights"]["preprocessing"]
    assert recorded["mean"] == pytest.approx(list(mean)) and recorded["std"] == pytest.approx(list(std))

    run = load_run(out, device="cpu")
    written = pd.read_csv(out / "predictions_test.csv")
    root = split.parent / "images"
    normalize = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    inputs = torch.stack([normalize(decode_resized(root / p, 64)) for p in written["path"]])
    assert torch.equal(torch.stack([run.preprocess(root / p) for p in written["path"]]), inputs)
    with torch.no_grad():
        expected = run.model(inputs).double().softmax(dim=1).numpy()
    probabilities = written[[f"prob_{c}" for c in run.classes]].to_numpy()
    assert probabilities == pytest.approx(expected, abs=1e-5)  # training's own evaluation used them

    images = [str(root / p) for p in written["path"]]
    result = runner.invoke(app, ["predict", "--run", str(out), *images, "--out", str(tmp_path / "preds.csv"),
                                 "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(tmp_path / "preds.csv")
    assert predicted[[f"prob_{c}" for c in run.classes]].to_numpy() == pytest.approx(expected, abs=1e-5)


def test_a_timm_teacher_keeps_its_head_and_sees_inputs_in_its_own_statistics(hf_cache):
    """Distillation from ``--teacher timm:NAME``: the teacher's ImageNet-1k head is kept, its class
    names are timm's, and on the student's ImageNet-normalised input it gives what timm's own model
    gives on the same pixels normalised with the weights' statistics (mean = std = 0.5 here)."""
    from torchvision import transforms as T

    from accvit_med.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
    from accvit_med.training.pretrain.distill import check_teacher, load_teacher, teacher_classes

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    reference = timm.create_model(name, pretrained=False).eval()
    _save_hf(hf_cache, f"timm/{name}", reference.state_dict())
    teacher = load_teacher(f"timm:{name}", torch.device("cpu"))
    pixels = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    mean, std = reference.pretrained_cfg["mean"], reference.pretrained_cfg["std"]
    with torch.no_grad():
        given = teacher(T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(pixels))
        expected = reference(T.Normalize(mean, std)(pixels))
    assert given.shape == (2, 1000) and torch.allclose(given, expected, atol=1e-4)
    names = timm.data.ImageNetInfo("imagenet-1k").label_descriptions()
    assert teacher_classes(f"timm:{name}") == [n.split(",")[0].strip() for n in names] and len(names) == 1000
    with pytest.raises(UserError, match="predicts 21843 classes; a teacher must predict ImageNet-1k's 1000"):
        check_teacher("timm:vit_tiny_patch16_224.augreg_in21k")


def test_a_sweep_plan_mixes_built_in_and_zoo_models(make_split, tmp_path):
    """A plan naming ``accvit_femto``, ``timm:resnet18`` and ``torchvision:mobilenet_v3_small``: the
    dry run plans one finetune per model under runs/<dataset>/<model>/seed<s>/; an unknown zoo name
    is the plan's one-line error."""
    import os
    import shutil

    from typer.testing import CliRunner

    from accvit_med.cli import app

    split = make_split(("a", "b"), 3, size=(40, 40), seed=6)
    (tmp_path / "splits").mkdir()
    for suffix in (".csv", ".json"):
        shutil.copy(split.with_suffix(suffix), tmp_path / "splits" / f"folder{suffix}")
    models = ["accvit_femto", "timm:resnet18", "torchvision:mobilenet_v3_small"]
    plan = ('datasets = ["folder"]\nmodels = [{}]\nseeds = [0]\nout = "runs"\n[recipe]\nepochs = 1\n'
            'weights = "none"\n')
    (tmp_path / "plan.toml").write_text(plan.format(", ".join(f'"{m}"' for m in models)))
    (tmp_path / "bad.toml").write_text(plan.format('"accvit_femto", "timm:resnet9000"'))
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        planned = CliRunner().invoke(app, ["sweep", "plan.toml", "--dry-run"])
        refused = CliRunner().invoke(app, ["sweep", "bad.toml", "--dry-run"])
    finally:
        os.chdir(old)
    assert planned.exit_code == 0, planned.output
    for model in models:
        assert f"folder/{model}/seed0: start" in planned.stdout
        assert f"--model {model} --seed 0 --out {tmp_path / 'runs' / 'folder' / model / 'seed0'}" in planned.stdout
    assert "3 of 3 run(s) to start or resume" in planned.stdout and not (tmp_path / "runs").exists()
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "timm:resnet9000" in refused.stderr


@pytest.mark.parametrize("name, image_size", [
    ("timm:resnet18", 64),                 # a CNN's last stage
    ("timm:vit_tiny_patch16_224", 64),     # ViT tokens to the patch grid, class token dropped
    ("torchvision:swin_t", 224),           # Swin's channels-last map, as the registry's layer gives it
])
def test_gradcam_of_zoo_models_equals_pytorch_grad_cam(name, image_size):
    """Our Grad-CAM (the registry's layer and reshape rule) against pytorch-grad-cam's GradCAM on the
    same model, image and (predicted) class: both min-max scaled at the input size, as pytorch-grad-cam scales."""
    gradcam_library = pytest.importorskip("pytorch_grad_cam", reason="grad-cam (test extra) is not installed")
    import numpy as np
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from accvit_med.interpret import grad_cam, registry_target

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, image_size=image_size).eval()
    head = classifier_head(model)[1]
    nn.init.normal_(head.weight, std=0.5)  # timm starts its heads at zero: no gradient to weigh
    images = torch.randn(4, 3, image_size, image_size)
    target = registry_target(name)
    result = grad_cam(model, images, target)  # each image's predicted class
    ours, explained = result.maps.numpy(), [int(c) for c in result.classes]

    def reshape(output):  # pytorch-grad-cam's documented transform for tokens: (B, N, C) -> (B, C, h, w)
        if target.prefix_tokens is not None:
            output = output[:, target.prefix_tokens:]
            side = int(output.shape[1] ** 0.5)
            return output.reshape(output.shape[0], side, side, output.shape[2]).permute(0, 3, 1, 2)
        return output.permute(0, 3, 1, 2) if target.channels_last else output

    with gradcam_library.GradCAM(model, [model.get_submodule(target.layer)], reshape_transform=reshape) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in explained])
    shown = [i for i in range(len(images)) if ours[i].max() > 0]  # an all-zero map has no scale to compare
    assert shown, "no image has positive evidence; the comparison would be empty"
    for i in shown:
        scaled = (ours[i] - ours[i].min()) / (ours[i].max() - ours[i].min() + 1e-7)
        np.testing.assert_allclose(scaled, theirs[i], atol=2e-3)
