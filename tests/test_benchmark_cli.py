"""``accvit-med benchmark``: the table, the models list, the reference ratios and bad input.

A tiny quick run (accvit_femto, batch 1, one timed round, no warm-up); no timing assertions.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.errors import UserError
from accvit_med.speed import parse_models, reference_model


def test_quick_run_prints_the_table():
    result = CliRunner().invoke(app, ["benchmark", "--models", "accvit_femto", "--batch-size", "1",
                                      "--image-size", "224", "--iters", "1", "--warmup", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "train img/s" in line)
    for column in ("model", "infer img/s", "train x accvit_femto", "infer x accvit_femto", "peak train memory (MiB)"):
        assert column in header
    cells = next(line for line in lines if "accvit_femto" in line and "│" in line).strip("│ ").split("│")
    assert cells[0].strip() == "accvit_femto"
    train, train_ratio, infer, infer_ratio, memory = (float(c) for c in cells[1:])
    assert train > 0 and infer > 0
    assert train_ratio == infer_ratio == 1.0  # the only model is its own reference
    assert memory > 0  # a training step allocates activations, gradients and AdamW state
    assert "round 1/1 done" in result.stderr


def test_models_list_parsing_and_reference():
    assert parse_models("accvit_femto, swin_t,,maxvit_t") == ["accvit_femto", "swin_t", "maxvit_t"]
    assert reference_model(["accvit_tiny", "swin_t", "maxvit_t"]) == "maxvit_t"
    assert reference_model(["swin_t", "convnext_tiny"]) == "swin_t"
    refusals = (("", "--models is empty"), ("swin_t,swin_t", "more than once"), ("vit_b_16", "unknown model"))
    for text, message in refusals:
        with pytest.raises(UserError, match=message):
            parse_models(text)


@pytest.mark.parametrize("args, message", [
    (["--models", "accvit_femto,resnet50"], "unknown model 'resnet50'"),
    (["--models", "accvit_femto", "--image-size", "100"], "multiples of 224"),
    (["--models", "accvit_femto", "--device", "tpu"], "device"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(app, ["benchmark", *args, "--iters", "1", "--warmup", "0"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_compile_wraps_the_train_and_the_inference_model(monkeypatch):
    import torch

    from accvit_med.models.throughput import measure_throughput

    compiled = []

    def fake_compile(module):
        compiled.append(module.training)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    (row,) = measure_throughput(["convnext_tiny"], batch_size=1, warmup=0, rounds=1, compile=True)
    assert sorted(compiled) == [False, True]  # one model in train mode, one in eval mode
    assert row.train_images_per_s > 0 and row.infer_images_per_s > 0


def test_cpu_allocator_tuning_and_its_opt_out(monkeypatch):
    import platform

    from accvit_med.env import tune_cpu_allocator

    monkeypatch.setenv("ACCVIT_MED_SYSTEM_MALLOC", "1")
    assert tune_cpu_allocator() is False
    monkeypatch.delenv("ACCVIT_MED_SYSTEM_MALLOC")
    assert tune_cpu_allocator() is (platform.libc_ver()[0] == "glibc")
