"""Any torchvision or timm classifier as a baseline: ``torchvision:<name>`` and ``timm:<name>``.

A zoo name is the library's own (``torchvision.models.list_models()``, ``timm.list_models()``,
with timm's pretrained tag if wanted: ``timm:resnet50.a1_in1k``). What the registry's rows say
about the built-in models is found here from the library or from the model itself:

* weights (``weights="imagenet"``): torchvision's default weights enum, read through torch.hub's
  cache (``$TORCH_HOME/hub/checkpoints``); timm's pretrained weights, read from the Hugging Face
  cache (``$HF_HOME/hub/models--timm--<name>/snapshots/<rev>/model.safetensors``). Offline without
  the file: one line naming it, the cache folder and how to fill it. The head is then replaced for
  the data set's classes, and the preprocessing the weights were trained with is recorded;
* the head: ``get_classifier()`` (timm) or the last Linear layer (torchvision), as the registry's;
* no weight decay: norms, biases and the model's own ``no_weight_decay()`` (timm's position
  embeddings and tokens); activation checkpointing: timm's ``set_grad_checkpointing``;
* the Grad-CAM layer (:func:`cam_layer`): the last module whose output is still a spatial map,
  found by one forward pass on the meta device, with the layout of that output.

timm is the optional extra ``accvit-med[timm]``. Importing this module imports neither library.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from accvit_med.errors import UserError

if TYPE_CHECKING:
    from torch import nn

ZOOS = ("torchvision", "timm")
TIMM_EXTRA = "pip install 'accvit-med[timm]'"
TIMM_WEIGHTS_FILE = "model.safetensors"


def parse(name: str) -> Optional[tuple[str, str]]:
    """``("timm", "resnet18")`` for ``"timm:resnet18"``; None for a name without a zoo prefix."""
    zoo, sep, arch = name.partition(":")
    if not sep:
        return None
    if zoo not in ZOOS or not arch:
        raise UserError(f"model {name!r}: write torchvision:<name> or timm:<name> (e.g. torchvision:densenet121, "
                        "timm:resnet18); `accvit-med models --zoo timm --filter resnet` lists them")
    return zoo, arch


def timm_module():
    """The timm package, or the one-line error that names the extra."""
    try:
        import timm
    except ImportError:
        raise UserError(f"timm: models need the optional timm package; install it with {TIMM_EXTRA}") from None
    return timm


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)


def list_zoo(zoo: str, contains: str = "") -> list[str]:
    """Every classifier of ``zoo`` whose name contains ``contains`` (case-insensitive), prefixed.
    timm's list is its pretrained names (with their tags), torchvision's its classification models."""
    if zoo not in ZOOS:
        raise UserError(f"--zoo must be one of {', '.join(ZOOS)}, got {zoo!r}")
    names = _torchvision_names() if zoo == "torchvision" else timm_module().list_models(pretrained=True)
    return [f"{zoo}:{n}" for n in names if contains.lower() in n.lower()]


def check_known(zoo: str, arch: str) -> None:
    """UserError naming the closest names unless ``arch`` is a model of ``zoo``."""
    if zoo == "torchvision":
        names = _torchvision_names()
        known = arch in names
    else:
        timm = timm_module()
        known = timm.is_model(arch)
        names = timm.list_models() if not known else []
    if not known:
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(f'{zoo}:{c}' for c in close)}?)" if close else ""
        raise UserError(f"{zoo} has no model {arch!r}{hint}; `accvit-med models --zoo {zoo} --filter TEXT` lists them")


def pretrained_weights(zoo: str, arch: str) -> Optional[str]:
    """What ``weights="imagenet"`` loads: torchvision's default weights enum (``"DenseNet121_Weights.IMAGENET1K_V1"``)
    or timm's Hugging Face repository (``"timm/resnet18.a1_in1k"``); None when there are none."""
    if zoo == "torchvision":
        import torchvision.models as tvm

        try:
            return str(tvm.get_model_weights(arch).DEFAULT)
        except (ValueError, AttributeError):
            return None
    cfg = timm_module().models.get_pretrained_cfg(arch)
    return None if cfg is None else cfg.hf_hub_id


def build(zoo: str, arch: str, num_classes: int, drop_path_rate: Optional[float],
          image_size: Optional[int]) -> nn.Module:
    """A randomly initialised ``num_classes``-way classifier of the zoo."""
    if zoo == "torchvision":
        import torchvision.models as tvm

        kwargs: dict[str, Any] = {"num_classes": num_classes}
        return tvm.get_model(arch, weights=None, **kwargs)
    timm = timm_module()
    kwargs = {"num_classes": num_classes}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if image_size is not None and _timm_fixed_size(arch):
        kwargs["img_size"] = image_size
    return timm.create_model(arch, pretrained=False, **kwargs)


def _timm_fixed_size(arch: str) -> bool:
    cfg = timm_module().models.get_pretrained_cfg(arch)
    return bool(cfg is not None and cfg.fixed_input_size)


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps downloads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def timm_weights_file(repo_id: str) -> Path:
    """The cached ``model.safetensors`` of ``repo_id``, downloaded when the cache lacks it and the
    network is allowed; otherwise one line naming the repository, the cache and how to fill it."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, TIMM_WEIGHTS_FILE)
    if isinstance(cached, str):
        return Path(cached)
    folder = hf_cache_dir()
    fill = (f"download it where the network is allowed (`hf download {repo_id}`) and copy the cache, or point "
            f"HF_HOME (or HF_HUB_CACHE) at a cache that holds it")
    if _hf_offline():
        raise UserError(f"the timm weights {repo_id}/{TIMM_WEIGHTS_FILE} are not in the Hugging Face cache "
                        f"{folder} and HF_HUB_OFFLINE is set; {fill}")
    try:
        return Path(hf_hub_download(repo_id, TIMM_WEIGHTS_FILE))
    except Exception as err:  # huggingface_hub's network and HTTP errors have no common base but Exception
        raise UserError(f"the timm weights {repo_id}/{TIMM_WEIGHTS_FILE} are not in the Hugging Face cache "
                        f"{folder} and could not be downloaded ({type(err).__name__}); {fill}, or set HF_HUB_OFFLINE=1 "
                        "to fail at once") from err


def pretrained(zoo: str, arch: str, drop_path_rate: Optional[float], image_size: Optional[int]):
    """The zoo's pretrained classifier with its own head, the weights file and the preprocessing the
    weights were trained with (input size, mean, std, interpolation)."""
    if zoo == "torchvision":
        return _torchvision_pretrained(arch)
    timm = timm_module()
    repo_id = pretrained_weights(zoo, arch)
    if repo_id is None:
        raise UserError(f"timm:{arch} has no pretrained weights on the Hugging Face hub; pass --weights none or PATH")
    file = timm_weights_file(repo_id)
    kwargs: dict[str, Any] = {}
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if image_size is not None and _timm_fixed_size(arch):
        kwargs["img_size"] = image_size
    model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    config = timm.data.resolve_data_config({}, model=model)
    preprocessing = {"input_size": int(config["input_size"][-1]), "mean": [float(v) for v in config["mean"]],
                     "std": [float(v) for v in config["std"]], "interpolation": str(config["interpolation"]),
                     "crop_pct": float(config["crop_pct"])}
    return model, file, preprocessing


def _torchvision_pretrained(arch: str):
    import torchvision.models as tvm

    from accvit_med.models.weights import from_hub_cache, torchvision_weights_file

    enum = tvm.get_model_weights(arch).DEFAULT
    model = from_hub_cache(enum, lambda: tvm.get_model(arch, weights=enum))
    transform = enum.transforms()
    preprocessing = {"input_size": int(transform.crop_size[0]), "resize_size": int(transform.resize_size[0]),
                     "mean": [float(v) for v in transform.mean], "std": [float(v) for v in transform.std],
                     "interpolation": transform.interpolation.value}
    return model, torchvision_weights_file(enum), preprocessing


def check_image_size(name: str, image_size: int) -> None:
    """UserError unless the zoo model ``name`` runs on ``image_size`` x ``image_size`` inputs: one
    forward pass on the meta device (no memory, no arithmetic) of the model as it would be built."""
    import torch

    zoo, arch = parse(name)
    with torch.device("meta"):
        model = build(zoo, arch, 2, None, image_size)
        try:
            model.eval()(torch.empty(1, 3, image_size, image_size))
        except (RuntimeError, ValueError, AssertionError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"{name} cannot take {image_size}x{image_size} images ({first}); "
                            "pass another --image-size, e.g. the weights' own (224)") from None


def cam_layer(name: str, image_size: int = 224):
    """The Grad-CAM layer of zoo model ``name``: the last module (in the order modules finish) whose
    output is still a spatial map, with its layout: ``(B, C, h, w)`` (CNNs), ``(B, h, w, C)`` (Swin-like
    channels-last maps) or ``(B, N, C)`` tokens (ViT/DeiT: the prefix tokens, class and distillation
    tokens or registers, are the ones beyond the square grid). Found by one meta-device forward pass."""
    import math

    import torch

    from accvit_med.models.registry import CamLayer

    zoo, arch = parse(name)
    finished: list[tuple[str, tuple[int, ...]]] = []
    with torch.device("meta"):
        model = build(zoo, arch, 2, None, image_size).eval()
        hooks = [module.register_forward_hook(
            lambda _m, _i, out, path=path: finished.append((path, tuple(out.shape))) if torch.is_tensor(out) else None)
            for path, module in model.named_modules() if path]
        try:
            model(torch.empty(1, 3, image_size, image_size))
        finally:
            for hook in hooks:
                hook.remove()
    # A ViT's last tokens reach the logits only through the class token (their gradient is zero
    # elsewhere), so its layer is the last block's input norm, as pytorch-grad-cam advises.
    block_norms = [(p, s) for p, s in finished if len(s) == 3 and p.rsplit(".", 1)[-1] in ("norm1", "ln_1")]
    if block_norms:
        path, shape = block_norms[-1]
        return CamLayer(path, prefix_tokens=shape[1] - math.isqrt(shape[1]) ** 2)
    for path, shape in reversed(finished):
        if len(shape) == 4 and shape[2] == shape[3] > 1 and shape[1] != shape[2]:
            return CamLayer(path)
        if len(shape) == 4 and shape[1] == shape[2] > 1:
            return CamLayer(path, channels_last=True)
        if len(shape) == 3 and shape[1] > 1:
            side = math.isqrt(shape[1])
            return CamLayer(path, prefix_tokens=shape[1] - side * side)
    raise UserError(f"{name} has no layer with a spatial output for Grad-CAM; pass the layer to grad_cam yourself")


def timm_weights_cached(repo_id: str) -> bool:
    """True when the Hugging Face cache holds ``repo_id``'s weights file."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, TIMM_WEIGHTS_FILE), str)
