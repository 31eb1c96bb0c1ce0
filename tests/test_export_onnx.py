"""``accvit-med export --format onnx`` and ``predict --onnx``: the graph ONNX Runtime runs gives the
run's probabilities (ACC-ViT through its reference modules, a torchvision ConvNeXt), a graph that
does not is never written, and ``predict --onnx`` runs without torch.

Runs: an accvit_femto trained one epoch on a few 224 px images, and the shrunk ConvNeXt of
tests/test_gradcam.py (the registry's ``convnext_tiny`` built small, so the export stays quick).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'accvit-med[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'accvit-med[onnx]')")

from helpers.quadrant_runs import make_quadrant_folder, train_quadrant_run  # noqa: E402
from helpers.tiny_models import shrink_convnext  # noqa: E402

from accvit_med.cli import app  # noqa: E402
from accvit_med.deploy import export as export_module  # noqa: E402
from accvit_med.deploy.export import export_onnx  # noqa: E402
from accvit_med.interpret import load_run  # noqa: E402
from accvit_med.training.finetune import finetune  # noqa: E402
from accvit_med.training.recipe import FinetuneConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def femto_run(make_split, tmp_path_factory) -> Path:
    split = make_split(("benign", "malignant"), per_class=3, size=(40, 30))
    out = tmp_path_factory.mktemp("femto") / "run"
    config = FinetuneConfig(split=str(split), model="accvit_femto", weights="none", epochs=1, batch_size=4,
                            image_size=224, randaugment_ops=0, workers=0, seed=0).validate()
    finetune(config, out=str(out))
    return out


@pytest.fixture(scope="module")
def convnext_run(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        return train_quadrant_run(tmp_path_factory.mktemp("convnext"), epochs=1, per_class=6)


@pytest.fixture(scope="module")
def convnext_onnx(convnext_run, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        out = tmp_path_factory.mktemp("exported") / "convnext.onnx"
        result = CliRunner().invoke(app, ["export", "--run", str(convnext_run), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max |probability difference|" in result.stdout and "opset 18" in result.stdout
    return out


def onnxruntime_probabilities(file: Path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_femto_export_is_the_runs_network_in_onnxruntime(femto_run, tmp_path):
    result = export_onnx(femto_run, tmp_path / "femto.onnx", verify_images=2)
    assert result.max_difference <= 1e-4 and result.images >= 1
    model = onnx.load(str(result.onnx))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 224, 224]  # batch is symbolic

    sidecar = json.loads(result.sidecar.read_text())
    config = json.loads((femto_run / "config.json").read_text())
    assert sidecar["classes"] == config["classes"] and sidecar["image_size"] == 224 and sidecar["opset"] == 18
    assert sidecar["mean"] == [0.485, 0.456, 0.406] and sidecar["std"] == [0.229, 0.224, 0.225]

    # Random inputs, two in a batch: the graph equals the run's (speed-tuned) network plus softmax.
    run = load_run(femto_run, device="cpu")
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = run.model(batch).softmax(dim=1).numpy()
    np.testing.assert_allclose(onnxruntime_probabilities(result.onnx, batch.numpy()), expected, atol=1e-4, rtol=0)


def test_predict_onnx_gives_predict_runs_probabilities(convnext_run, convnext_onnx, tmp_path, monkeypatch):
    shrink_convnext(monkeypatch)
    images = make_quadrant_folder(tmp_path / "new", per_class=3, seed=5)
    runner = CliRunner()
    for tta in ("none", "h"):
        by_onnx, by_run = tmp_path / f"onnx_{tta}.csv", tmp_path / f"run_{tta}.csv"
        result = runner.invoke(app, ["predict", "--onnx", str(convnext_onnx), str(images), "--out", str(by_onnx),
                                     "--tta", tta, "--workers", "2"])
        assert result.exit_code == 0, result.output
        assert "ONNX" in result.stdout
        result = runner.invoke(app, ["predict", "--run", str(convnext_run), str(images), "--out", str(by_run),
                                     "--tta", tta, "--workers", "0", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        onnx_frame, run_frame = pd.read_csv(by_onnx), pd.read_csv(by_run)
        assert list(onnx_frame.columns) == list(run_frame.columns)
        assert onnx_frame["path"].tolist() == run_frame["path"].tolist()
        probs = [c for c in run_frame.columns if c.startswith("prob_")]
        np.testing.assert_allclose(onnx_frame[probs].to_numpy(), run_frame[probs].to_numpy(), atol=1e-4, rtol=0)
        assert not np.allclose(run_frame[probs].to_numpy(), 1 / len(probs), atol=1e-3)  # not a constant output


def test_a_graph_that_fails_verification_is_never_written(convnext_run, tmp_path, monkeypatch):
    shrink_convnext(monkeypatch)
    real = export_module.graph_model

    def perturbed(run):  # the exported graph's head bias differs from the run's weights
        model = real(load_run(run.path, device="cpu"))
        with torch.no_grad():
            model.network.classifier[2].bias.add_(0.5 * torch.arange(len(run.classes)))
        return model

    monkeypatch.setattr(export_module, "graph_model", perturbed)
    out = tmp_path / "out" / "bad.onnx"
    result = CliRunner().invoke(app, ["export", "--run", str(convnext_run), "--out", str(out)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "fails verification" in result.stderr
    assert "nothing written" in result.stderr
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_predict_onnx_runs_without_torch(convnext_onnx, tmp_path):
    images = make_quadrant_folder(tmp_path / "new", per_class=2, seed=1)
    code = ("import sys\nfrom accvit_med.cli import main\n"
            f"try:\n    main(['predict', '--onnx', {str(convnext_onnx)!r}, {str(images)!r}])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout and "signal" in done.stdout


def test_bad_onnx_input_is_one_line(convnext_run, convnext_onnx, tmp_path, monkeypatch):
    shrink_convnext(monkeypatch)
    runner = CliRunner()
    image = next(make_quadrant_folder(tmp_path / "img", per_class=1).rglob("*.png"))
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(convnext_onnx.read_bytes())
    swapped = tmp_path / "swapped.onnx"
    swapped.write_bytes(b"not a graph")
    (tmp_path / "swapped.json").write_text(convnext_onnx.with_suffix(".json").read_text())
    cases = [
        (["predict", str(image)], "either --run"),
        (["predict", "--onnx", str(convnext_onnx), "--run", str(convnext_run), str(image)], "either --run"),
        (["predict", "--onnx", str(lonely), str(image)], "no sidecar"),
        (["predict", "--onnx", str(swapped), str(image)], "checksum differs"),
        (["export", "--run", str(convnext_run), "--out", str(convnext_onnx)], "already exists"),
        (["export", "--run", str(convnext_run), "--format", "torchscript"], "--format must be onnx"),
        (["export", "--run", str(convnext_run), "--opset", "13"], "at least 17"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, (args, result.stderr)
