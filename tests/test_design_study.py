"""The paper's design study (appendix E, Table 8): the ACC-ViT-nano variants against its counts.

Rows 1, 2 and 4 are reproduced by reading the text literally (within 1% parameters, 5% FLOPs).
Two rows are not, and the tests below assert our own counts and say why instead of tuning the
models to the printed numbers (docs/design-study.md has the table and the reasoning).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlock
from torchvision.models.maxvit import MBConv

from accvit_med.models import count_parameters, create_model, list_models, model_info
from accvit_med.models.acc_vit import DESIGN_STUDY, ACCViT, ACCViTConfig, AtrousInvertedResidual
from accvit_med.models.flops import count_flops

# Table 8: name -> (millions of parameters, GFLOPs) at 224x224 with a 1000-class head.
TABLE8 = {
    "accvit_nano_mbconv": (16.907, 4.862),
    "accvit_nano_atrous_conv": (19.33, 4.939),
    "accvit_nano_shared_mlp": (14.585, 3.473),
    "accvit_nano": (16.649, 3.812),
    "accvit_nano_convnext_mlp": (17.025, 3.844),
}
CONSISTENT_ROWS = ["accvit_nano_mbconv", "accvit_nano_atrous_conv", "accvit_nano"]


def _counts(model: nn.Module) -> tuple[float, float]:
    return count_parameters(model) / 1e6, count_flops(model, 224) / 1e9


def _registry_counts(summaries: dict, name: str) -> tuple[float, float]:
    """_counts of the registry model, as `accvit-med models` computed them (conftest's session rows)."""
    return summaries[name].params / 1e6, summaries[name].gflops


@pytest.mark.parametrize("name", CONSISTENT_ROWS)
def test_rows_the_text_reproduces_match_table8(name, model_summaries):
    params, gflops = _registry_counts(model_summaries, name)
    paper_params, paper_gflops = TABLE8[name]
    assert abs(params / paper_params - 1) < 0.01, params
    assert abs(gflops / paper_gflops - 1) < 0.05, gflops


def test_shared_mlp_row_matches_only_with_one_fewer_stage3_layer(model_summaries):
    # Row 3 (+ shared MLP, still averaging) printed 14.585M / 3.473G, 2.06M and 0.34 GFLOPs below
    # row 4, which only adds the gates (a few thousand parameters, ~0.01 GFLOPs). Our variant,
    # built as the text says on nano's depths 1-2-4-1, lands next to row 4 instead:
    params, gflops = _registry_counts(model_summaries, "accvit_nano_shared_mlp")
    assert params == pytest.approx(16.599, abs=0.001) and gflops == pytest.approx(3.803, abs=0.001)
    assert abs(params / TABLE8["accvit_nano_shared_mlp"][0] - 1) > 0.1  # the printed row is not this model
    # The printed numbers are exactly this model with depths 1-2-3-1 (one stage-3 layer fewer):
    # the row was most likely measured on a shallower model. We keep nano's depths.
    shallower = ACCViTConfig(64, (64, 128, 256, 512), (1, 2, 3, 1), 32, 0.1, "atrous", "mean", "shared")
    with torch.device("meta"):
        params, gflops = _counts(ACCViT(shallower))
    assert abs(params / TABLE8["accvit_nano_shared_mlp"][0] - 1) < 0.001, params
    assert abs(gflops / TABLE8["accvit_nano_shared_mlp"][1] - 1) < 0.001, gflops


def test_convnext_row_matches_in_flops_but_not_in_parameters(model_summaries):
    # Row 5 replaces the MLP by a ConvNeXt block (as MOAT). A torchvision CNBlock adds a 7x7
    # depthwise convolution and a layer scale to the MLP: 51 parameters per channel per layer
    # (94.7K on nano) and 49 multiply-adds per pixel and channel (0.031 GFLOPs). The FLOPs match
    # row 5 (3.812 + 0.031 = 3.843 vs 3.844); the parameters fall 1.8% short of 17.025M and no
    # reading that keeps the FLOPs reproduces the missing 0.3M (they would have to sit where they
    # cost no multiply-adds). We assert our count.
    params, gflops = _registry_counts(model_summaries, "accvit_nano_convnext_mlp")
    nano_params, nano_gflops = _registry_counts(model_summaries, "accvit_nano")
    assert params - nano_params == pytest.approx(51 * (64 + 2 * 128 + 4 * 256 + 512) / 1e6, abs=1e-9)
    assert abs(gflops / TABLE8["accvit_nano_convnext_mlp"][1] - 1) < 0.005, gflops
    assert params == pytest.approx(16.719, abs=0.001)
    assert 0.015 < 1 - params / TABLE8["accvit_nano_convnext_mlp"][0] < 0.02


def test_variants_are_built_from_the_blocks_the_text_names():
    with torch.device("meta"):
        models = {name: create_model(name, num_classes=3) for name in DESIGN_STUDY}
    layer = models["accvit_nano_mbconv"].stages[1][0]
    assert isinstance(layer.conv, MBConv) and len(layer.branch_mlps) == 3 and layer.attention.gate is None
    layer = models["accvit_nano_atrous_conv"].stages[1][0]
    assert isinstance(layer.conv, AtrousInvertedResidual) and layer.conv.gate is None and len(layer.branch_mlps) == 3
    layer = models["accvit_nano_shared_mlp"].stages[1][0]
    assert layer.conv.gate is None and layer.attention.gate is None and isinstance(layer.mlp, nn.Sequential)
    layer = models["accvit_nano_convnext_mlp"].stages[1][0]
    assert layer.conv.gate is not None and layer.attention.gate is not None and isinstance(layer.convnext, CNBlock)
    assert not hasattr(layer, "mlp")


@pytest.mark.parametrize("name", list(DESIGN_STUDY))
def test_variant_trains_and_averaging_is_a_plain_mean(name):
    # Small and fast: femto-sized widths with the variant's switches, one training step, and the
    # averaged branches checked against an independent mean of the branch outputs.
    torch.manual_seed(0)
    config = DESIGN_STUDY[name]
    tiny = ACCViTConfig(16, (16, 32, 32, 32), (1, 1, 1, 1), 16, 0.0, config.conv_block, config.fusion, config.mlp)
    model = ACCViT(tiny, num_classes=3).train()
    assert not model.fast  # the design study always runs the reference modules
    out = model(torch.randn(2, 3, 224, 224))
    out.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    attention = model.stages[0][0].attention
    tokens = torch.randn(1, 56, 56, 16)
    with torch.no_grad():
        fused = attention(tokens)
        if config.fusion == "mean":
            torch.testing.assert_close(fused, torch.stack(attention.branch_outputs(tokens)).mean(0))


def test_registry_lists_the_design_study_apart():
    assert not set(DESIGN_STUDY) & set(list_models())
    assert list_models(design_study=True)[-4:] == list(DESIGN_STUDY)
    assert all(model_info(name).design_study and model_info(name).family == "accvit" for name in DESIGN_STUDY)
    assert model_info("accvit_nano_mbconv").display_name == "ACC-ViT-N (mbconv)"


def test_bad_design_choice_is_a_value_error():
    with pytest.raises(ValueError, match="mlp must be one of"):
        ACCViTConfig(16, (16, 32, 32, 32), (1, 1, 1, 1), 16, 0.0, mlp="swiglu")
    with pytest.raises(ValueError, match="multiple of head_dim"):
        ACCViTConfig(16, (16, 30, 32, 32), (1, 1, 1, 1), 16, 0.0)


@pytest.mark.parametrize("name", list(DESIGN_STUDY))
def test_variants_get_what_training_asks_the_registry_for(name, tmp_path):
    # finetune/pretrain/benchmark reach a model only through the registry: weights from a file,
    # activation checkpointing of every layer, no weight decay on the position tables.
    from accvit_med.models.activation_checkpointing import enable_activation_checkpointing
    from accvit_med.training.pretrain.param_groups import no_weight_decay_names

    torch.manual_seed(0)
    model = create_model(name, num_classes=2)
    path = tmp_path / "variant.pth"
    torch.save(model.state_dict(), path)
    loaded = create_model(name, num_classes=2, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert enable_activation_checkpointing(loaded) == sum(DESIGN_STUDY[name].depths)
    tables = [n for n in no_weight_decay_names(loaded) if n.endswith("relative_position_bias_table")]
    branches_per_layer = (4, 3, 2, 1)  # attention branches per stage (appendix A.2)
    assert len(tables) == sum(b * d for b, d in zip(branches_per_layer, DESIGN_STUDY[name].depths))
