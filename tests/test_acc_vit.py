"""ACC-ViT: partitions, atrous branches, gates, fast path == reference path, variants vs Table 2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import count_parameters, create_model
from accvit_med.models.acc_vit import (
    CONFIGS,
    ACCViT,
    ACCViTConfig,
    AtrousAttention,
    AtrousInvertedResidual,
    check_image_size,
)
from accvit_med.models.fast import FastAtrousAttention, FastAtrousInvertedResidual, set_reference_attention
from accvit_med.models.partition import dilate, undilate, window_departition, window_partition

# Table 2 of the paper (224x224, 1000 classes), millions of parameters.
TABLE2_PARAMS = {
    "accvit_tiny": 28.367,
    "accvit_small": 62.886,
    "accvit_base": 103.576,
    "accvit_nano": 16.649,
    "accvit_pico": 9.55,
    "accvit_femto": 4.4,
}


@pytest.mark.parametrize("rate", [1, 2, 4, 8])
def test_dilate_matches_strided_slicing_and_round_trips(rate):
    x = torch.randn(2, 3, 56, 56)
    dilated = dilate(x, rate)
    assert dilated.shape == (2 * rate * rate, 3, 56 // rate, 56 // rate)
    # Independent reference: map (b, hs, ws) is x[b, :, hs::rate, ws::rate].
    for hs in range(rate):
        for ws in range(rate):
            sub_grid = dilated[1 * rate * rate + hs * rate + ws]
            torch.testing.assert_close(sub_grid, x[1, :, hs::rate, ws::rate], rtol=0, atol=0)
    assert torch.equal(undilate(dilated, rate), x)


def test_window_partition_round_trip_is_exact():
    x = torch.randn(2, 5, 14, 21)
    windows = window_partition(x)
    assert windows.shape == (2, 6, 49, 5)
    torch.testing.assert_close(windows[0, 1, :, 2].view(7, 7), x[0, 2, 0:7, 7:14], rtol=0, atol=0)
    assert torch.equal(window_departition(windows, 14, 21), x)


def _attention_layer(rates=(1, 2, 4, 8), channels=32, head_dim=16) -> FastAtrousAttention:
    torch.manual_seed(0)
    layer = FastAtrousAttention(channels, head_dim, rates)
    with torch.no_grad():  # a non-trivial gate and biases, so equivalence checks are meaningful
        for param in layer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return layer


@pytest.mark.parametrize("rate_index", [0, 1, 2, 3])
def test_branch_of_rate_k_mixes_only_its_dilated_window(rate_index):
    layer = _attention_layer()
    rate = layer.rates[rate_index]
    tokens = torch.randn(1, 56, 56, 32)
    i, j = 23, 38
    moved = tokens.clone()
    moved[0, i, j, 0] += 1.0  # one channel: a shift of all channels would vanish in LayerNorm
    with torch.no_grad():
        before = layer.branch_outputs(tokens)[rate_index]
        after = layer.branch_outputs(moved)[rate_index]
    changed = (after - before).abs().amax(dim=-1)[0] > 1e-6
    # Expected: the 7x7 window of the dilated map that holds (i, j): same residues mod `rate`,
    # and dilated coordinates (i // rate, j // rate) in the same 7x7 block.
    rows = torch.arange(56)
    same_row = (rows % rate == i % rate) & ((rows // rate) // 7 == (i // rate) // 7)
    same_col = (rows % rate == j % rate) & ((rows // rate) // 7 == (j // rate) // 7)
    expected = same_row[:, None] & same_col[None, :]
    assert expected.sum() == 49
    assert torch.equal(changed, expected)


def test_attention_gate_weights_sum_to_one_and_fuse_the_branches():
    layer = _attention_layer(rates=(1, 2, 4))
    tokens = torch.randn(2, 28, 28, 32)
    with torch.no_grad():
        weights = layer.gate_weights(tokens)
        outputs = layer.branch_outputs(tokens)
        set_reference_attention(layer, True)
        fused = layer(tokens)
    assert weights.shape == (2, 28, 28, 3)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 28, 28))
    assert weights.min() > 0 and weights.std() > 0  # really adaptive, not uniform
    torch.testing.assert_close(fused, sum(weights[..., k : k + 1] * outputs[k] for k in range(3)))


def test_conv_gate_weights_sum_to_one():
    block = FastAtrousInvertedResidual(16, 16, stride=1, drop_path=0.0).eval()
    x = torch.randn(2, 16, 14, 14)
    with torch.no_grad():
        expanded = block.expand(block.pre_norm(x))
        weights = torch.softmax(block.gate(block.gate_pool(expanded)), dim=1)
    assert weights.shape == (2, 3, 14, 14)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 14, 14))


def test_downsampling_gate_pools_after_the_projection_exactly():
    # gate_logits pools the 3 gate channels instead of the expanded map; bias and borders included.
    block = FastAtrousInvertedResidual(8, 16, stride=2, drop_path=0.0).double()
    nn.init.normal_(block.gate.bias)
    expanded = torch.randn(2, 64, 14, 14, dtype=torch.float64)
    torch.testing.assert_close(block.gate_logits(expanded), block.gate(block.gate_pool(expanded)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_cpu_window_attention_equals_explicit_attention(grad):
    # Training takes the matmul path, inference SDPA's fused CPU kernel (4-D mask): both against
    # softmax(q k^T / sqrt(d) + bias) v written out.
    from accvit_med.models.fast.attention import _window_attention

    q, k, v = (torch.randn(6, 4, 49, 16, dtype=torch.float64, requires_grad=grad) for _ in range(3))
    bias = torch.randn(4, 49, 49, dtype=torch.float64, requires_grad=grad)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 4 + bias, dim=-1) @ v
    with torch.set_grad_enabled(grad):
        torch.testing.assert_close(_window_attention(q, k, v, bias), expected, rtol=1e-12, atol=1e-12)


class _ReportsCuda(torch.Tensor):
    """A CPU tensor that says it lives on CUDA: the device dispatch in ``_window_attention`` takes
    its CUDA branch while the arithmetic runs on the CPU (PyTorch computes on the real storage)."""

    @property
    def device(self):
        return torch.device("cuda")


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_cuda_branch_of_window_attention_equals_explicit_attention_on_the_cpu(grad):
    # The branch CUDA runs (SDPA with the 3-D (heads, L, L) bias broadcast over windows), values and
    # gradients, without a GPU; tests/test_cuda.py checks the real kernels where one is present.
    from accvit_med.models.fast.attention import _window_attention

    q, k, v = (torch.randn(3, 4, 49, 16, dtype=torch.float64, requires_grad=grad) for _ in range(3))
    bias = torch.randn(4, 49, 49, dtype=torch.float64, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out = _window_attention(*(t.as_subclass(_ReportsCuda) for t in (q, k, v, bias)))
        assert out.device.type == "cuda"  # the CUDA branch ran
        expected = torch.softmax(q @ k.transpose(-2, -1) / 4 + bias, dim=-1) @ v
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, rtol=1e-12, atol=1e-12)
    if grad:
        upstream = torch.randn_like(expected)
        ours = torch.autograd.grad(out.as_subclass(torch.Tensor), (q, k, v, bias), upstream)
        theirs = torch.autograd.grad(expected, (q, k, v, bias), upstream)
        for mine, reference in zip(ours, theirs):
            torch.testing.assert_close(mine, reference, rtol=1e-10, atol=1e-10)


def test_cpu_inference_attention_equals_reference_path_in_float32():
    # The stage-1 branches at 56x56 through the fused SDPA kernel, in the precision it runs in.
    layer = _attention_layer(rates=(1, 2, 4, 8)).eval()
    tokens = torch.randn(2, 56, 56, 32)
    with torch.inference_mode():
        fast = layer(tokens)
        layer.use_reference = True
        ref = layer(tokens)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["forward_stacked", "forward_per_branch"])
@pytest.mark.parametrize("rates", [(1, 2, 4, 8), (1, 2), (1,)])
def test_fast_path_equals_reference_path_with_gradients(rates, path):
    # Both optimised paths against the paper's per-branch einops rearranges: forward_stacked (all
    # branches in one attention call; what CUDA runs) and forward_per_branch (what the CPU runs).
    # float64: the paths sum in different orders; in float32 that alone moves large gradients.
    layer = _attention_layer(rates=rates).double()
    tokens = torch.randn(2, 56, 56, 32, requires_grad=True, dtype=torch.float64)
    results = []
    for reference in (False, True):
        layer.zero_grad()
        tokens.grad = None
        out = AtrousAttention.forward(layer, tokens) if reference else getattr(layer, path)(tokens)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        results.append((out.detach(), tokens.grad.clone(), grads))
    (fast, fast_in, fast_params), (ref, ref_in, ref_params) = results
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast_in, ref_in, rtol=1e-10, atol=1e-10)
    for fast_grad, ref_grad in zip(fast_params, ref_params):
        torch.testing.assert_close(fast_grad, ref_grad, rtol=1e-10, atol=1e-10)


def test_whole_model_fast_equals_reference():
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=4).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        fast = model(x)
        set_reference_attention(model, True)
        ref = model(x)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_fast_switch_builds_the_same_model_from_the_registry():
    # create_model(fast=False) is the paper's graph (acc_vit.py); fast=True (the default) the
    # speed-tuned subclasses, with the same state-dict keys and shapes.
    fast = create_model("accvit_femto", num_classes=3)
    reference = create_model("accvit_femto", num_classes=3, fast=False)
    assert fast.fast and not reference.fast
    assert any(isinstance(m, FastAtrousAttention) for m in fast.modules())
    assert not any(isinstance(m, (FastAtrousAttention, FastAtrousInvertedResidual)) for m in reference.modules())
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert list(fast.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fast_path_has_the_same_outputs_and_gradients(train):
    # In float64 the fast and the reference model compute the same outputs and gradients. Femto's
    # structure (four stages, 2 layers in stage 2, 16-channel heads, every dilation) at a quarter
    # of its widths: the exactness does not depend on the channel count, the cost does.
    torch.manual_seed(0)
    narrow = ACCViTConfig(16, (16, 32, 48, 64), (1, 2, 2, 1), 16, 0.0)
    fast = ACCViT(narrow, num_classes=3).double()
    reference = ACCViT(narrow, num_classes=3, fast=False).double()
    assert fast.fast and not reference.fast
    reference.load_state_dict(fast.state_dict())
    for model in (fast, reference):
        for module in model.modules():  # BatchNorm statistics away from the identity for eval mode
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.fill_(1.5)
        model.train(train)
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    results = []
    for model in (fast, reference):
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (out, grads), (ref, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_counts_match_table2(name):
    with torch.device("meta"):  # counting needs no memory or initialisation
        model = create_model(name, num_classes=1000)
    millions = count_parameters(model) / 1e6
    assert abs(millions / TABLE2_PARAMS[name] - 1) < 0.01, millions


def test_femto_trains_with_finite_gradients_everywhere():
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=7).train()
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 7)
    out.logsumexp(-1).sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("stages.0"))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_variant_output_shape_and_gradient_shapes(name):
    # On the meta device: shapes and autograd run through the whole graph without the arithmetic,
    # so the large variants cost nothing. Femto above checks the numbers of the same code.
    with torch.device("meta"):
        model = create_model(name, num_classes=5).train()
        out = model(torch.randn(2, 3, 224, 224))
        out.sum().backward()
    assert out.shape == (2, 5)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_448_input_runs_and_other_sizes_are_refused():
    model = create_model("accvit_femto", num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 448, 448)).shape == (1, 2)
    # The model raises ValueError; the registry turns the same rule into the one-line UserError.
    with pytest.raises(ValueError, match="300x224.*multiples of 224"):
        model(torch.randn(1, 3, 300, 224))
    with pytest.raises(ValueError, match="112x112"):
        check_image_size(112, 112)
    with pytest.raises(UserError, match="multiples of 224"):
        create_model("accvit_femto", image_size=256)


@pytest.mark.parametrize("dilation", [2, 3, 4, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [56, 14, 7, 9])
def test_dilated_depthwise_conv_training_paths_equal_dilated_conv_with_gradients(dilation, stride, size):
    from accvit_med.models.fast.depthwise import DilatedDepthwiseConv

    conv = DilatedDepthwiseConv(4, dilation, stride).double()
    x = torch.randn(2, 4, size, size + 1, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = conv(x)  # grad enabled: the custom-backward / even-pixel / spread-kernel paths
    reference = torch.nn.functional.conv2d(x, conv.weight, stride=stride, padding=dilation, dilation=dilation, groups=4)
    torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(reference)
    grads = torch.autograd.grad(out, (x, conv.weight), upstream)
    expected = torch.autograd.grad(reference, (x, conv.weight), upstream)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dilation, stride", [(2, 1), (3, 1), (2, 2), (3, 2)])
def test_dilated_depthwise_conv_trains_under_cpu_bf16_autocast(dilation, stride):
    # The hand-written backward passes get bf16 gradients for float32 saved tensors under autocast.
    from accvit_med.models.fast.depthwise import DilatedDepthwiseConv

    torch.manual_seed(0)
    conv = DilatedDepthwiseConv(8, dilation, stride)
    x = torch.randn(2, 8, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        reference = torch.nn.functional.conv2d(x, conv.weight, stride=stride, padding=dilation, dilation=dilation,
                                               groups=8)
    assert out.dtype == reference.dtype == torch.bfloat16
    upstream = torch.randn_like(reference)
    grads = torch.autograd.grad(out, (x, conv.weight), upstream)
    expected = torch.autograd.grad(reference, (x, conv.weight), upstream)
    for got, want in zip(grads, expected):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())


def _straightforward_block(block: AtrousInvertedResidual, x: torch.Tensor) -> torch.Tensor:
    """Eq. 3 written plainly with the block's own modules: no rewritten kernels, no custom backward."""
    expanded = block.expand(block.pre_norm(x))
    weights = torch.softmax(block.gate(block.gate_pool(expanded)), dim=1)
    fused = 0
    for index, ((conv, norm, activation), excitation) in enumerate(block.branches):
        convolved = torch.nn.functional.conv2d(expanded, conv.weight, stride=conv.stride, padding=conv.padding,
                                               dilation=conv.dilation, groups=conv.groups)
        fused = fused + weights[:, index : index + 1] * excitation(activation(norm(convolved)))
    return block.shortcut(x) + block.project(fused)


@pytest.mark.parametrize("stride, in_channels, size", [(1, 16, 14), (2, 8, 28), (2, 8, 14)])
def test_training_block_equals_straightforward_computation_with_gradients(stride, in_channels, size):
    # The whole atrous inverted residual as the CPU trains it (custom backward passes, gated-share
    # Function, channels-last BatchNorm) against the plain computation, in float64.
    torch.manual_seed(0)
    block = FastAtrousInvertedResidual(in_channels, 16, stride=stride, drop_path=0.0).double().train()
    x = torch.randn(2, in_channels, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    results = []
    for compute in (block, lambda t: _straightforward_block(block, t)):
        block.zero_grad()
        x.grad = None
        out = compute(x)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in block.parameters()]))
    (out, grad_x, grads), (ref, ref_grad_x, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_x, ref_grad_x, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride", [1, 2])
def test_training_block_under_bf16_autocast_follows_the_straightforward_computation(stride):
    # bf16 autocast (the CUDA recipe; here on the CPU): the hand-written backward passes get bf16
    # maps and gradients and must return float32 parameter gradients as close to autograd's own
    # as bf16 allows (within 2% in norm; both are about 0.5% from float32).
    torch.manual_seed(0)
    block = FastAtrousInvertedResidual(8, 16, stride=stride, drop_path=0.0).train()
    x = torch.randn(2, 8, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    results = []
    for compute in (block, lambda t: _straightforward_block(block, t)):
        block.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = compute(x)
        out.float().square().mean().backward()
        results.append((out.float(), {n: p.grad.clone() for n, p in block.named_parameters()}))
    (out, grads), (ref, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())
    # The pre-norm's bias shifts every channel of the expansion's input by a constant, which the
    # expansion's training-mode BatchNorm removes: its true gradient is 0 and bf16 leaves noise.
    del grads["pre_norm.bias"], ref_grads["pre_norm.bias"]
    for name, got in grads.items():
        assert got.dtype == torch.float32
        assert (got - ref_grads[name]).norm() <= 0.02 * ref_grads[name].norm(), name


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn) in this torch build")
def test_inference_fuses_conv_and_gelu_on_onednn_with_the_same_results():
    # Without autograd on the CPU, eval-mode convolutions + GELU run as one oneDNN call with a
    # fused post-op (a private operator, self-checked); outputs must match the unfused path.
    from accvit_med.models.fast import depthwise

    assert depthwise._conv_gelu_works()
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=4).eval()
    x = torch.randn(2, 3, 224, 224)
    calls = []
    fused_op = depthwise._CONV_GELU
    try:
        depthwise._CONV_GELU = lambda *args: calls.append(1) or fused_op(*args)
        with torch.inference_mode():
            fused = model(x)
    finally:
        depthwise._CONV_GELU = fused_op
    assert len(calls) == 4 * sum(len(stage) for stage in model.stages)  # expansion + 3 branches per layer
    unfused = model(x)  # autograd on: plain conv2d and nn.GELU
    torch.testing.assert_close(fused, unfused.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_block_compiles_to_one_graph_in_training_and_inference(stride):
    # torch.compile must see the whole block (custom autograd Functions, in-place inference, the
    # oneDNN conv + GELU path skipped while compiling): a graph break would make `--compile`
    # recompile per layer shape and fall back to eager. backend="eager" traces without inductor.
    torch.manual_seed(0)
    block = FastAtrousInvertedResidual(16, 16, stride=stride, drop_path=0.0)
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    x = torch.randn(2, 16, 28, 28).contiguous(memory_format=torch.channels_last)
    block.eval()
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), block(x), rtol=1e-5, atol=1e-6)
    block.train()
    inputs = x.clone().requires_grad_(True)
    compiled(inputs).sum().backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all()


def test_training_works_after_inference_mode_on_the_same_model():
    # The fast path caches token indices on first use; built under inference_mode they must still
    # be usable by autograd afterwards (evaluate, then keep training).
    layer = _attention_layer(rates=(1, 2))
    tokens = torch.randn(1, 28, 28, 32)
    with torch.inference_mode():
        layer(tokens)
    out = layer(tokens.requires_grad_())
    out.sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()


def test_channels_last_batchnorm_matches_torch_batchnorm_in_training():
    # acc_vit.BatchNorm normalises channels-last CPU maps as a (pixels, channels) matrix.
    from accvit_med.models.fast.conv import FastBatchNorm as BatchNorm

    torch.manual_seed(0)
    ours, theirs = BatchNorm(16).double(), nn.BatchNorm2d(16, eps=1e-3, momentum=0.01).double()
    for module in (ours, theirs):
        nn.init.normal_(module.weight)
        nn.init.normal_(module.bias)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 16, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    upstream = torch.randn(4, 16, 7, 7, dtype=torch.float64)
    results = []
    for module in (ours, theirs):
        out = module(x)
        results.append((out, *torch.autograd.grad(out, (x, module.weight, module.bias), upstream)))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    for key, value in theirs.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-12, atol=0)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride, in_channels", [(1, 16), (2, 8)])
def test_eval_mode_folds_batchnorm_exactly(stride, in_channels):
    # In eval mode the pre-norm and expansion BatchNorms fold into the 1x1 expansion and each
    # branch's BatchNorm into its depthwise convolution; the result is the unfolded computation.
    torch.manual_seed(0)
    block = FastAtrousInvertedResidual(in_channels, 16, stride=stride, drop_path=0.0).double()
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics and affine far from the identity
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    block.eval()
    x = torch.randn(2, in_channels, 28, 28, dtype=torch.float64, requires_grad=True)
    expected = _straightforward_block(block, x)
    for grad_enabled in (True, False):  # with gradients (Grad-CAM) the CPU conv rewrites run too
        with torch.set_grad_enabled(grad_enabled):
            torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    with torch.inference_mode():  # the in-place inference path
        torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(block(x).sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("first", [True, False])
def test_gated_excitation_gradients(channels_last, first):
    # The hand-written backward of one branch's squeeze-and-excitation and gated share, against
    # torchvision's SqueezeExcitation for the values and finite differences for every gradient, in
    # both layouts (CPU maps are channels-last, CUDA branches NCHW) and with a strided gate slice.
    from torchvision.ops import SqueezeExcitation as TorchvisionSE

    from accvit_med.models.fast.conv import _GatedExcitation

    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    activation = torch.randn(2, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    gates = torch.softmax(torch.randn(2, 3, 5, 7, dtype=torch.float64), dim=1)
    gates = gates.contiguous(memory_format=layout).requires_grad_()
    fused = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    se = TorchvisionSE(6, 3, activation=torch.nn.SiLU).double()  # MaxViT's (and our) SE
    matrices = [se.fc1.weight.flatten(1), se.fc1.bias, se.fc2.weight.flatten(1), se.fc2.bias]
    matrices = [m.detach().clone().requires_grad_() for m in matrices]

    def share(fused, activation, gates, *weights):
        return _GatedExcitation.apply(None if first else fused, activation, gates[:, 1:2], *weights)

    inputs = (fused, activation, gates, *matrices)
    expected = se(activation) * gates[:, 1:2] + (0 if first else fused)
    torch.testing.assert_close(share(*inputs), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(share, inputs)
