"""The registry: names, info for other tools, baselines, input sizes, and `accvit-med models`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.errors import UserError
from accvit_med.models import classifier_head, count_parameters, create_model, list_models, model_info, model_table

BASELINES = {"swin_t": torchvision.models.swin_t, "convnext_tiny": torchvision.models.convnext_tiny,
             "maxvit_t": torchvision.models.maxvit_t}


def test_list_models_has_the_six_variants_and_three_baselines():
    assert list_models() == [
        "accvit_femto", "accvit_pico", "accvit_nano", "accvit_tiny", "accvit_small", "accvit_base",
        "swin_t", "convnext_tiny", "maxvit_t",
    ]


def test_unknown_model_lists_the_known_names():
    with pytest.raises(UserError, match="unknown model 'resnet50'; choose one of: accvit_femto, .*maxvit_t"):
        create_model("resnet50")
    with pytest.raises(UserError, match="unknown model"):
        model_info("vit_b_16")


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_are_torchvision_models_with_a_new_head(name):
    with torch.device("meta"):
        ours = create_model(name, num_classes=7, drop_path_rate=0.0)
        reference = BASELINES[name](num_classes=7)
    assert type(ours) is type(reference)
    assert count_parameters(ours) == count_parameters(reference)
    head_name, head = classifier_head(ours)
    # torchvision's own names for the final Linear layer (its models/*.py).
    assert head_name == {"swin_t": "head", "convnext_tiny": "classifier.2", "maxvit_t": "classifier.5"}[name]
    assert head.out_features == 7


@pytest.mark.parametrize("name", list_models())
def test_model_info_names_real_layers(name):
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=3)
    head_name, head = classifier_head(model)
    assert model.get_submodule(head_name) is head and isinstance(head, torch.nn.Linear) and head.out_features == 3
    captured = []
    model.get_submodule(info.gradcam.path).register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.device("meta"):
        model(torch.randn(1, 3, 224, 224))
    # The Grad-CAM layer is the last stage at 1/32 resolution, in the layout model_info announces.
    shape = captured[0].shape
    spatial = shape[1:3] if info.gradcam.channels_last else shape[2:4]
    assert tuple(spatial) == (7, 7)


def test_maxvit_takes_448_when_told_and_sizes_are_checked():
    with torch.device("meta"):
        model = create_model("maxvit_t", num_classes=2, image_size=448)
        assert model(torch.randn(1, 3, 448, 448)).shape == (1, 2)
    with pytest.raises(UserError, match="multiples of 224"):
        create_model("maxvit_t", image_size=320)
    with pytest.raises(UserError, match="num_classes must be at least 1"):
        create_model("accvit_femto", num_classes=0)


def test_drop_path_rate_reaches_the_model():
    model = create_model("accvit_femto", drop_path_rate=0.3)
    rates = [m.p for m in model.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    assert max(rates) == pytest.approx(0.3) and min(rates) == 0.0


def test_models_command_prints_every_model_with_params_and_gflops(model_summaries, monkeypatch):
    from accvit_med.models import summary

    asked = []

    def computed_once(image_size, design_study=False, recount=False):  # the session's rows, counted once
        asked.append((image_size, design_study, recount))
        return list(model_summaries.values())

    monkeypatch.setattr(summary, "summarize_models", computed_once)
    result = CliRunner().invoke(app, ["models"])
    assert asked == [(224, True, False)]
    assert result.exit_code == 0, result.output
    for name in list_models():
        assert name in result.output
    assert "28.326" in result.output and "5.694" in result.output  # accvit_tiny: params (M), GFLOPs
    assert "30.920" in result.output  # maxvit_t params (M): torchvision's meta says 30919624
    assert CliRunner().invoke(app, ["models", "--recount"]).exit_code == 0
    assert asked[-1] == (224, True, True)


def test_stored_table_equals_a_recount_of_every_model(model_summaries):
    # model_summaries was counted now (meta-device models, the FLOP counter); the table was counted
    # once and stored: every registry model has a row, and every row is the count.
    assert list(model_table.COUNTS_224) == list_models(design_study=True)
    for name, row in model_summaries.items():
        params, flops = model_table.COUNTS_224[name]
        assert params == row.params, name
        assert flops / 1e9 == row.gflops, name
    # The generator writes back exactly this file from these counts.
    assert model_table.render(model_table.COUNTS_224) == Path(model_table.__file__).read_text(encoding="utf-8")


def test_models_at_224_builds_no_model_unless_told(monkeypatch):
    from accvit_med.models import summary

    counted = []
    monkeypatch.setattr(summary, "count_model", lambda name, image_size=224: counted.append(name) or (1, 10**9))
    rows = summary.summarize_models(224, design_study=True)
    assert counted == [] and {row.name: (row.params, row.gflops) for row in rows} == {
        name: (p, f / 1e9) for name, (p, f) in model_table.COUNTS_224.items()}
    summary.summarize_models(224, recount=True)
    assert counted == list_models()
    counted.clear()
    summary.summarize_models(448)  # the table holds 224 only
    assert counted == list_models()


def test_models_command_refuses_a_bad_image_size():
    result = CliRunner().invoke(app, ["models", "--image-size", "300"])
    assert result.exit_code == 2
    assert "300x300" in result.stderr


def test_baseline_drop_path_rate_keeps_torchvision_ramp():
    with torch.device("meta"):
        model = create_model("swin_t", drop_path_rate=0.5)
        reference = torchvision.models.swin_t()
    ours = [m.p for m in model.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    theirs = [m.p for m in reference.modules() if isinstance(m, torchvision.ops.StochasticDepth)]
    assert ours == pytest.approx([p * 0.5 / 0.2 for p in theirs])
