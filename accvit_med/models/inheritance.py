"""ACC-ViT initialised from torchvision's ImageNet MaxViT-T ("weight inheritance").

No ACC-ViT ImageNet weights are published, but ACC-ViT was built on torchvision's MaxViT and nearly
every ACC-ViT tensor has a MaxViT-T tensor of the same role and shape (the table in
docs/pretrained-weights.md). This module copies them over, so that
an ACC-ViT starts with ImageNet features instead of random ones. It is NOT an ACC-ViT trained on
ImageNet: the parts MaxViT lacks (gates, extra layers, the fused attention's LayerNorm) start from
rules chosen so that each layer begins close to MaxViT's function. docs/pretrained-weights.md has the
evidence and the recommended path (inherit -> distil with ``pretrain --teacher`` -> fine-tune).

The mapping, and why (``accvit_tiny``/``accvit_nano`` have MaxViT-T's widths 64-128-256-512):

* Stem and classifier top (LayerNorm, Linear, Tanh, Linear): same modules, copied exactly. The
  1000-class head is kept for 1000 classes, else replaced as for the baselines.
* Conv module = MaxViT's MBConv with the depthwise convolution repeated at dilations 1, 2, 3:
  shortcut <- ``proj``, pre-norm <- ``pre_norm``, ``expand`` <- ``conv_a``, ``project`` <- ``conv_c``
  (exact). The dilation-1 branch's depthwise conv + BN and SE <- ``conv_b`` and
  ``squeeze_excitation`` (exact); the dilation-2 and -3 branches get the same tensors (from a
  neighbour: the same 3x3 kernel spread wider keeps the learned filter's shape at a larger scale).
  The gate starts with zero weights and biases (GATE_ON, GATE_OFF, GATE_OFF), so the softmax puts
  ~96% on the dilation-1 branch: the module starts close to MBConv, and the zero weights still get
  gradients, so the gate can learn to use the wider branches.
* Attention: torchvision's MaxViT runs window attention, an MLP, grid attention and another MLP in
  sequence; ACC-ViT runs its dilated branches in parallel, gates them and adds one MLP. At 224 px
  the rate-1 branch sees exactly MaxViT's window partition and the widest rate (8, 4, 2 on 56, 28,
  14 pixels) exactly its grid partition, so rate 1 <- ``window_attention`` and the widest rate <-
  ``grid_attention`` (LayerNorm, qkv, merge, 13x13 relative bias table; exact). The rates in
  between take whichever of the two is nearer on a log scale (rate^2 <= widest -> window, else
  grid), copied as neighbours. The gate picks window and grid equally (zero weights, biases
  GATE_ON for them, GATE_OFF for the rates in between). The single stage-4 branch (the whole 7x7
  map, where window and grid coincide) <- ``window_attention``.
  MaxViT scales q.k by 1/sqrt(channels), ACC-ViT by 1/sqrt(head size): the ratio
  sqrt(head size / channels) is folded into the copied query rows (weights and bias), so the copied
  branch computes MaxViT's attention exactly (the tests check it in float64).
* The shared MLP <- the MLP after grid attention (the layer's last, the one that reads what both
  attentions wrote); exact.
* The LayerNorm on the fused attention has no MaxViT counterpart and cannot be an identity. It is
  calibrated on a fixed probe batch (seeded smooth noise) so that it gives back, on average, the
  scale of what MaxViT's two attentions add to the residual: weight = (selected branches) x the
  mean per-token standard deviation of the gated sum, bias = (selected branches) x its mean.
* Depths differ (tiny 2-3-6-2, nano 1-2-4-1, MaxViT-T 2-2-5-2). Fewer layers: the first N MaxViT
  layers of the stage (Xu et al. 2024, "Initializing Models with Larger Ones", found first-N layer
  selection works best). More layers: the extra layer at the end of the stage copies the stage's
  last MaxViT layer (neighbour) with the last projection of each residual branch (conv ``project``,
  the fused attention's LayerNorm affine, the MLP's second Linear) set to zero, so it starts as an
  exact identity and learns from there.

Narrower variants (``accvit_femto``, ``accvit_pico``): weight selection as in Xu et al.: every
tensor is the MaxViT-T tensor (mapped as above) cut to the first k entries along each dimension;
that choice is consistent through the network (residual channel c is MaxViT's channel c in every
layer, expanded channel j is MaxViT's j). Attention heads are selected head by head: target head h
reads its head_dim features from source head floor(h * H_source / H_target) (the next unused
slice when two target heads share a source head), and its relative bias column from that head.
Wider variants (``accvit_small``, ``accvit_base``) are refused: no consistent way to invent the
missing channels.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import acc_vit

# MaxViT-T's shape and the check of which variants can inherit from it need no torch (plan checks).
from accvit_med.models.configs import MAXVIT_CHANNELS, MAXVIT_DEPTHS, MAXVIT_HEAD_DIM, check_inheritable

SOURCE = "maxvit_t"
# Gate logits: selected branches GATE_ON, the others GATE_OFF. exp(-4) makes the conv module ~96%
# MBConv and the attention ~98% window+grid, while the other branches still get gradients.
GATE_ON, GATE_OFF = 0.0, -4.0
PROBE_IMAGES, PROBE_SEED = 2, 0

EXACT, SELECTED, NEIGHBOUR, FRESH = "exact", "selected", "neighbour", "fresh"

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_WB = ("weight", "bias")


@dataclass
class Assignment:
    """One target tensor: where it comes from (None: set by a rule) and how it is counted."""

    target: str
    source: str | None
    kind: str
    query_scale: float | None = None  # multiply the query rows of a qkv tensor by this (attention scale fold)
    zero: bool = False  # set to zero after copying (identity start of an extra layer's residual branch)


@dataclass
class InheritanceSummary:
    """What the inherited model's parameters came from: counts per kind and the total."""

    model: str
    source: str = SOURCE
    counts: dict[str, int] = field(default_factory=dict)
    layer_map: dict[str, str] = field(default_factory=dict)
    width_selection: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        total = max(self.total, 1)
        return {
            "inherited_from": self.source, "model": self.model, "width_selection": self.width_selection,
            "parameters": {k: {"count": v, "percent": round(100.0 * v / total, 2)} for k, v in self.counts.items()},
            "layer_map": self.layer_map,
        }

    def lines(self) -> list[str]:
        total = max(self.total, 1)
        copied = EXACT if not self.width_selection else SELECTED
        labels = {copied: "copied exactly" if copied == EXACT else "selected (first-k channels)",
                  NEIGHBOUR: "copied from a neighbour layer/branch", FRESH: "freshly initialised"}
        parts = [f"{labels[k]} {self.counts.get(k, 0) / 1e6:.2f}M ({100.0 * self.counts.get(k, 0) / total:.1f}%)"
                 for k in (copied, NEIGHBOUR, FRESH)]
        return [f"{self.model} inherited from torchvision's {self.source} ImageNet weights: " + ", ".join(parts)]


def layer_sources(depths: tuple[int, ...]) -> list[list[tuple[int, bool]]]:
    """Per stage, per ACC-ViT layer: (MaxViT-T layer it copies, True when it is an extra identity layer)."""
    plan = []
    for depth, source_depth in zip(depths, MAXVIT_DEPTHS):
        layers = [(i, False) for i in range(min(depth, source_depth))]
        layers += [(source_depth - 1, True)] * max(0, depth - source_depth)
        plan.append(layers)
    return plan


def attention_source(rate: int, rates: tuple[int, ...]) -> str:
    """``window_attention`` or ``grid_attention``: the MaxViT module an atrous branch copies."""
    widest = max(rates)
    if rate == 1:
        return "window_attention"
    if rate == widest:
        return "grid_attention"
    # Log-nearer of rate 1 and the widest; ties to the (local) window attention.
    return "window_attention" if rate * rate <= widest else "grid_attention"


def plan_assignments(config: acc_vit.ACCViTConfig) -> list[Assignment]:
    """Every ACC-ViT tensor's source in MaxViT-T's state dict (the written mapping)."""
    plan: list[Assignment] = []

    def copy(target: str, source: str, names, kind: str) -> None:
        plan.extend(Assignment(f"{target}.{n}", f"{source}.{n}", kind) for n in names)

    copy("stem.0.0", "stem.0.0", ("weight",), EXACT)
    copy("stem.0.1", "stem.0.1", _BN, EXACT)
    copy("stem.1.0", "stem.1.0", _WB, EXACT)
    for stage, layers in enumerate(layer_sources(config.depths)):
        rates = acc_vit.STAGE_RATES[stage]
        for index, (source_index, extra) in enumerate(layers):
            t, s = f"stages.{stage}.{index}", f"blocks.{stage}.layers.{source_index}.layers"
            same = NEIGHBOUR if extra else EXACT
            mb = f"{s}.MBconv"
            if index == 0:  # downsampling: avg-pool (stride 2) + 1x1 shortcut
                copy(f"{t}.conv.shortcut.1", f"{mb}.proj.1", _WB, same)
            copy(f"{t}.conv.pre_norm", f"{mb}.layers.pre_norm", _BN, same)
            copy(f"{t}.conv.expand.0", f"{mb}.layers.conv_a.0", ("weight",), same)
            copy(f"{t}.conv.expand.1", f"{mb}.layers.conv_a.1", _BN, same)
            for branch in range(len(acc_vit.CONV_DILATIONS)):
                kind = same if branch == 0 else NEIGHBOUR
                copy(f"{t}.conv.branches.{branch}.0.0", f"{mb}.layers.conv_b.0", ("weight",), kind)
                copy(f"{t}.conv.branches.{branch}.0.1", f"{mb}.layers.conv_b.1", _BN, kind)
                for fc in ("fc1", "fc2"):
                    copy(f"{t}.conv.branches.{branch}.1.{fc}", f"{mb}.layers.squeeze_excitation.{fc}", _WB, kind)
            plan.extend(Assignment(f"{t}.conv.gate.{n}", None, FRESH) for n in _WB)
            plan.extend(Assignment(f"{t}.conv.project.{n}", f"{mb}.layers.conv_c.{n}", FRESH if extra else same,
                                   zero=extra) for n in _WB)
            for branch, rate in enumerate(rates):
                module = attention_source(rate, rates)
                structural = rate == 1 or rate == max(rates)
                kind = same if structural else NEIGHBOUR
                a, b = f"{t}.attention.branches.{branch}", f"{s}.{module}.attn_layer"
                copy(f"{a}.norm", f"{b}.0", _WB, kind)
                copy(f"{a}.proj", f"{b}.1.merge", _WB, kind)
                copy(a, f"{b}.1", ("relative_position_bias_table",), kind)
                plan.extend(Assignment(f"{a}.qkv.{n}", f"{b}.1.to_qkv.{n}", kind, query_scale=1.0) for n in _WB)
            if len(rates) > 1:
                plan.extend(Assignment(f"{t}.attention.gate.{n}", None, FRESH) for n in _WB)
            plan.extend(Assignment(f"{t}.attention_norm.{n}", None, FRESH, zero=extra) for n in _WB)
            copy(f"{t}.mlp.0", f"{s}.grid_attention.mlp_layer.0", _WB, same)
            copy(f"{t}.mlp.1", f"{s}.grid_attention.mlp_layer.1", _WB, same)
            plan.extend(Assignment(f"{t}.mlp.3.{n}", f"{s}.grid_attention.mlp_layer.3.{n}", FRESH if extra else same,
                                   zero=extra) for n in _WB)
    copy("classifier.2", "classifier.2", _WB, EXACT)
    copy("classifier.3", "classifier.3", _WB, EXACT)
    copy("classifier.5", "classifier.5", ("weight",), EXACT)
    return plan


def _head_rows(heads_t: int, head_dim_t: int, heads_s: int, head_dim_s: int) -> torch.Tensor:
    """Source feature index of every target head feature (head by head, see the module docstring)."""
    per_source = math.ceil(heads_t / heads_s)
    if per_source * head_dim_t > head_dim_s:
        raise UserError(f"cannot select {heads_t} heads of {head_dim_t} from {heads_s} heads of {head_dim_s}")
    rows, used = [], {}
    for h in range(heads_t):
        source = h * heads_s // heads_t
        slot = used.get(source, 0)
        used[source] = slot + 1
        start = source * head_dim_s + slot * head_dim_t
        rows.append(torch.arange(start, start + head_dim_t))
    return torch.cat(rows)


def _select(tensor: torch.Tensor, shape: torch.Size, key: str, stage_heads) -> torch.Tensor:
    """``tensor`` cut to ``shape``: first-k along every dimension, head by head where heads are."""
    if tensor.shape == shape:
        return tensor
    head_keys = ("qkv.weight", "qkv.bias", "proj.weight", "relative_position_bias_table")
    if key.endswith(head_keys):
        heads_t, head_dim_t, heads_s = stage_heads
        rows = _head_rows(heads_t, head_dim_t, heads_s, MAXVIT_HEAD_DIM)
    if key.endswith(("qkv.weight", "qkv.bias")):
        width_s = tensor.shape[0] // 3
        index = torch.cat([rows + part * width_s for part in range(3)])
        tensor = tensor.index_select(0, index)
    elif key.endswith("proj.weight"):
        tensor = tensor.index_select(1, rows)
    elif key.endswith("relative_position_bias_table"):
        tensor = tensor.index_select(1, rows[::head_dim_t] // MAXVIT_HEAD_DIM)
    for dim, size in enumerate(shape):
        tensor = tensor.narrow(dim, 0, size)
    return tensor


def _stage_of(key: str) -> int | None:
    return int(key.split(".")[1]) if key.startswith("stages.") else None


def apply_plan(model: acc_vit.ACCViT, source: dict[str, torch.Tensor], plan: list[Assignment]) -> None:
    """Write every planned tensor into ``model`` (copies, attention scale fold, zeros, gate rules)."""
    config = model.config
    own = model.state_dict()
    with torch.no_grad():
        for item in plan:
            target = own[item.target]
            if item.source is not None:
                stage = _stage_of(item.target)
                heads = None if stage is None else (config.channels[stage] // config.head_dim, config.head_dim,
                                                    MAXVIT_CHANNELS[stage] // MAXVIT_HEAD_DIM)
                value = _select(source[item.source], target.shape, item.target, heads)
                target.copy_(value)
                if item.query_scale is not None:
                    # q.k/sqrt(channels) (MaxViT) = (f q).k/sqrt(head_dim) (ours) with f = sqrt(head_dim/channels).
                    channels = MAXVIT_CHANNELS[stage]
                    factor = math.sqrt(config.head_dim / channels)
                    target[: target.shape[0] // 3].mul_(factor)
            if item.zero:
                target.zero_()
        _init_gates(model)


def _init_gates(model: acc_vit.ACCViT) -> None:
    """Zero gate weights; biases select the dilation-1 conv branch and the window and grid attentions."""
    for stage in model.stages:
        for layer in stage:
            nn.init.zeros_(layer.conv.gate.weight)
            layer.conv.gate.bias.copy_(torch.tensor([GATE_ON] + [GATE_OFF] * (len(acc_vit.CONV_DILATIONS) - 1)))
            gate = layer.attention.gate
            if gate is not None:
                rates = layer.attention.rates
                nn.init.zeros_(gate.weight)
                gate.bias.copy_(torch.tensor([GATE_ON if r in (1, max(rates)) else GATE_OFF for r in rates]))


def _selected_branches(layer) -> int:
    rates = layer.attention.rates
    return len({1, max(rates)})


def calibrate_attention_norms(model: acc_vit.ACCViT, skip: set[str]) -> None:
    """Set each fused-attention LayerNorm (not those in ``skip``) so that it returns the average scale
    of what MaxViT's window and grid attentions add to the residual, on a fixed probe batch.

    One forward pass: a hook on each attention module sets its layer's LayerNorm from the attention's
    output before that LayerNorm runs, so every later layer sees already-calibrated inputs.
    """
    generator = torch.Generator().manual_seed(PROBE_SEED)
    # Smooth noise (a 7x7 random image, bicubically upsampled), normalised like an ImageNet input.
    coarse = torch.randn(PROBE_IMAGES, 3, 7, 7, generator=generator)
    probe = nn.functional.interpolate(coarse, size=(224, 224), mode="bicubic", align_corners=False)
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, acc_vit.ACCViTLayer) and f"{name}.attention_norm" not in skip:
            def hook(_module, _inputs, output, layer=module):
                count = _selected_branches(layer)
                std = output.float().std(dim=-1).mean()
                mean = output.float().mean()
                layer.attention_norm.weight.fill_(count * float(std))
                layer.attention_norm.bias.fill_(count * float(mean))
            handles.append(module.attention.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def inherit_from_maxvit(name: str, source: dict[str, torch.Tensor], num_classes: int = 1000,
                        drop_path_rate: float | None = None) -> tuple[acc_vit.ACCViT, InheritanceSummary]:
    """ACC-ViT ``name`` initialised from a MaxViT-T state dict ``source``.

    Args:
        name: an ACC-ViT variant no wider than MaxViT-T (tiny, nano, pico, femto).
        source: torchvision ``maxvit_t``'s state dict (ImageNet's has 1000 classes).
        num_classes: head size; anything but the source's class count gets a fresh head (as the baselines).
        drop_path_rate: stochastic depth (default: the variant's own).
    Returns:
        The model and the summary of where its parameters came from.
    """
    from accvit_med.models.registry import reset_classifier

    check_inheritable(name)
    config = acc_vit.CONFIGS[name]
    source_classes = source["classifier.5.weight"].shape[0]
    model = acc_vit.build_acc_vit(name, num_classes=source_classes, drop_path_rate=drop_path_rate)
    plan = plan_assignments(config)
    apply_plan(model, source, plan)
    extra_norms = {item.target.rsplit(".", 1)[0] for item in plan if item.zero and "attention_norm" in item.target}
    calibrate_attention_norms(model, extra_norms)
    kinds = {item.target: item.kind for item in plan}
    width_selection = any(c != m for c, m in zip(config.channels, MAXVIT_CHANNELS))
    if num_classes != source_classes:
        reset_classifier(model, num_classes)
        kinds["classifier.5.weight"] = FRESH
    summary = InheritanceSummary(model=name, width_selection=width_selection)
    summary.layer_map = {
        f"stages.{s}.{i}": (f"identity start, tensors from blocks.{s}.layers.{j}" if extra
                            else f"blocks.{s}.layers.{j}")
        for s, layers in enumerate(layer_sources(config.depths)) for i, (j, extra) in enumerate(layers)
    }
    for key, parameter in model.named_parameters():
        kind = kinds.get(key, FRESH)
        if kind == EXACT and width_selection:
            kind = SELECTED
        summary.counts[kind] = summary.counts.get(kind, 0) + parameter.numel()
    return model, summary


def print_note(summary: InheritanceSummary, default: bool) -> None:
    """Tell the user (once, on the main process) what the inherited initialisation is."""
    if os.environ.get("RANK", "0") != "0":
        return
    lines = summary.lines()
    if default:
        lines.append(
            "note: ACC-ViT has no published ImageNet weights; '--weights imagenet' gives it ImageNet knowledge "
            "inherited from torchvision's MaxViT-T (not an ACC-ViT trained on ImageNet). For better weights, "
            "distil or pre-train one (`accvit-med pretrain --teacher maxvit_t --weights maxvit_t ...`) and pass "
            "--weights PATH; see docs/pretrained-weights.md"
        )
    for line in lines:
        print(line, file=sys.stderr)
