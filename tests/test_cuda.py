"""The CUDA paths: ACC-ViT's fast attention on the GPU, bf16 autocast, AMP fine-tuning with resume,
DDP over NCCL, torch.compile and the GPU memory figures.

They need a CUDA device, so CI (CPU only) reports them as skipped; they are run on a lent GPU
machine with ``python -m pytest tests/test_cuda.py`` (README, Development).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from accvit_med.models.fast import set_reference_attention
from accvit_med.models.registry import create_model
from accvit_med.speed import peak_training_memory
from accvit_med.training.evaluate_run import evaluate_run
from accvit_med.training.finetune import finetune
from accvit_med.training.recipe import FinetuneConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")


@pytest.fixture(autouse=True)
def exact_fp32():
    # TF32 would make "fp32" comparisons differ at 1e-3; these tests compare two fp32 paths.
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_fast_attention_matches_the_per_branch_reference_on_cuda():
    torch.manual_seed(0)
    model = create_model("accvit_nano", num_classes=7).cuda().train()
    images = torch.randn(2, 3, 224, 224, device="cuda")
    outputs, grads = [], []
    for reference in (False, True):
        set_reference_attention(model, reference)
        model.zero_grad()
        torch.manual_seed(1)  # same stochastic depth draws
        out = model(images)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert relative_error(outputs[0], outputs[1]) < 1e-4
    assert relative_error(grads[0], grads[1]) < 1e-3


def test_bf16_autocast_stays_close_to_fp32():
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=5).cuda().eval()
    images = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad():
        full = model(images)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(images)
    assert torch.isfinite(half).all()
    assert relative_error(half.float(), full) < 5e-2


def test_compiled_model_matches_eager():
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=5).cuda().eval()
    images = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        eager = model(images)
        compiled = torch.compile(model)(images)
    assert relative_error(compiled, eager) < 1e-4


@pytest.fixture(scope="module")
def gpu_split(make_split):
    return make_split(("a", "b", "c"), 8, size=(64, 64), seed=3)


def test_amp_finetune_on_cuda_resumes_and_evaluates(gpu_split, tmp_path):
    out = tmp_path / "run"

    def config(epochs: int) -> FinetuneConfig:
        return FinetuneConfig(split=str(gpu_split), model="accvit_femto", weights="none", epochs=epochs,
                              batch_size=4, lr=3e-4, image_size=224, workers=2, seed=3, device="cuda",
                              amp=True, channels_last=True).validate()

    first = finetune(config(1), out=str(out))
    assert len(first.history) == 1
    run_config = json.loads((out / "config.json").read_text())
    assert run_config["amp_dtype"] == "bfloat16"
    resumed = finetune(config(2), out=str(out), resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) for row in resumed.history)

    # The checkpoint is plain tensors: it loads on the CPU with weights_only.
    last = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and all(t.device.type == "cpu" for t in last["model"].values())

    # evaluate reproduces the run's own test predictions (same bf16 autocast).
    result = evaluate_run(out, device="cuda", workers=0)
    written = pd.read_csv(out / "predictions_test.csv")
    again = pd.read_csv(result.predictions)
    probs = [c for c in written.columns if c.startswith("prob_")]
    np.testing.assert_allclose(again[probs].to_numpy(), written[probs].to_numpy(), atol=2e-2)


def test_fp16_amp_resume_restores_the_grad_scaler(gpu_split, tmp_path, monkeypatch):
    # GPUs with bf16 get bf16 autocast (no loss scaling); fp16 and its GradScaler are what older
    # GPUs get, so the run is told the GPU has no bf16.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)

    def config(epochs: int) -> FinetuneConfig:
        return FinetuneConfig(split=str(gpu_split), model="accvit_femto", weights="none", epochs=epochs,
                              batch_size=4, lr=3e-4, image_size=224, workers=0, seed=5, device="cuda",
                              amp=True).validate()

    def scaler_state(run):
        return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["scaler"]

    finetune(config(2), out=str(tmp_path / "reference"))
    assert json.loads((tmp_path / "reference" / "config.json").read_text())["amp_dtype"] == "float16"
    expected = scaler_state(tmp_path / "reference")
    out = tmp_path / "resumed"
    finetune(config(1), out=str(out))
    after_one = scaler_state(out)
    finetune(config(2), out=str(out), resume=True, explicit=["epochs"])
    resumed = scaler_state(out)
    print(f"fp16 GradScaler: after epoch 1 {after_one}, uninterrupted {expected}, resumed {resumed}")
    # Successful steps since the last change of scale: a fresh scaler on resume counts epoch 2 only.
    assert expected["_growth_tracker"] != 0 and after_one["_growth_tracker"] != 0
    assert resumed["scale"] == expected["scale"]
    assert resumed["_growth_tracker"] == expected["_growth_tracker"]


def test_collectives_work_on_the_cuda_process_group(tmp_path):
    # One GPU cannot host two NCCL ranks, so this runs the reductions, gathers and broadcasts that
    # finetune sends between ranks on a one-rank group with the backend torchrun would get.
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent(
        """
        import types
        import torch, torch.distributed as dist
        from accvit_med.training import distributed as d

        torch.cuda.set_device(0)
        dist.init_process_group(backend=d.process_group_backend("cuda"), init_method="tcp://127.0.0.1:29533",
                                rank=0, world_size=1)
        ctx = types.SimpleNamespace(enabled=True, world_size=1, rank=0, is_main=True)
        assert d.all_reduce_sum(ctx, [1.5, 2.0]) == [1.5, 2.0]
        assert d.all_gather_objects(ctx, {"rows": [3, 1]}) == [{"rows": [3, 1]}]
        assert d.broadcast_object(ctx, "stop") == "stop"
        d.barrier(ctx)
        t = torch.ones(3, device="cuda")
        dist.all_reduce(t)  # DDP's gradient path: CUDA tensors over NCCL
        print("OK", dist.get_backend(), t.sum().item())
        dist.destroy_process_group()
        """
    ))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[0] == "OK" and done.stdout.split()[-1] == "3.0", done.stdout


def test_activation_checkpointing_saves_gpu_memory():
    plain = peak_training_memory("accvit_femto", batch_size=32, image_size=224, device="cuda")
    checkpointed = peak_training_memory("accvit_femto", batch_size=32, image_size=224, device="cuda",
                                        grad_checkpointing=True)
    print(f"accvit_femto batch 32 peak CUDA memory: {plain / 2**20:.0f} MiB, "
          f"with activation checkpointing {checkpointed / 2**20:.0f} MiB")
    assert checkpointed < 0.8 * plain


def test_branch_layouts_give_the_same_outputs_and_gradients():
    from accvit_med.models.fast import FastAtrousInvertedResidual

    # float64: the two layouts run different depthwise kernels (cuDNN's, PyTorch's own) whose
    # float32 sums differ in order; in float32 that alone moves small gradients by ~1%.
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=5).cuda().double().train()
    images = torch.randn(2, 3, 224, 224, device="cuda", dtype=torch.float64)
    results = []
    blocks = [m for m in model.modules() if isinstance(m, FastAtrousInvertedResidual)]
    for contiguous in (True, False):
        for block in blocks:  # this model's modules only: nothing global changes
            block.cuda_branches_contiguous = contiguous
        model.zero_grad()
        out = model(images)
        out.square().sum().backward()
        results.append((out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert relative_error(results[0][0], results[1][0]) < 1e-10
    assert relative_error(results[0][1], results[1][1]) < 1e-10
