"""``accvit-med export --format onnx``: a run's network as an ONNX graph, verified before it is kept.

The graph is the network the run trained followed by a softmax, with a dynamic batch size and the
run's input size. ACC-ViT is exported through its reference modules (``fast=False``, the same
parameters and state-dict keys; the speed-tuned modules' layout tricks gain nothing in ONNX
Runtime). The file is written under a temporary name, loaded with ONNX Runtime and run on images
of the run's test split, batched and one at a time; it is kept (renamed into place, with its
sidecar) only if every probability is within ``tolerance`` of the PyTorch run's, the one
``predict --run`` uses. A failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from accvit_med.deploy import runtime
from accvit_med.deploy.preprocess import normalise
from accvit_med.deploy.sidecar import INPUT_NAME, OUTPUT_NAME, Sidecar, sidecar_path
from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_text, check_writable, sha256_file
from accvit_med.interpret.run import LoadedRun, load_run

DEFAULT_OPSET = 18  # LayerNorm is one node from opset 17; 18 is served by every current ONNX Runtime
MIN_OPSET = 17
TOLERANCE = 1e-4
VERIFY_IMAGES = 16
FORMATS = ("onnx",)


class ExportVerificationFailed(UserError):
    """The exported graph's probabilities differ from the run's; nothing was written."""


@dataclass
class ExportResult:
    onnx: Path
    sidecar: Path
    opset: int
    images: int
    max_difference: float
    tolerance: float
    seconds: float


def default_export_path(run: LoadedRun) -> Path:
    return run.path / "export" / f"{run.model_name}.onnx"


class _Probabilities(nn.Module):
    """The run's network followed by the softmax that ``predict`` applies."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images).softmax(dim=1)


def graph_model(run: LoadedRun) -> nn.Module:
    """The network to trace: the run's weights in the reference modules (ACC-ViT) or the run's own."""
    from accvit_med.models.registry import known_family

    if known_family(run.model_name) != "accvit":
        return _Probabilities(run.model).eval()
    from accvit_med.models import create_model

    reference = create_model(run.model_name, num_classes=len(run.classes), weights=None,
                             image_size=run.image_size, fast=False)
    reference.load_state_dict(run.model.state_dict())
    return _Probabilities(reference).eval()


def write_graph(model: nn.Module, image_size: int, file: Path, opset: int) -> None:
    """Trace ``model`` on one image into ``file`` (batch dimension dynamic)."""
    example = torch.zeros(1, 3, image_size, image_size)
    # The TorchScript exporter: it handles every family here and traces ACC-ViT in half the time of
    # the torch.export-based one (which the tests' time budget cannot afford).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(file), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=opset, dynamo=False, do_constant_folding=True)


def verification_images(run: LoadedRun, data_dir: Optional[str | os.PathLike], limit: int) -> list[Path]:
    """The first ``limit`` images of the run's test split (predictions_test.csv, under its data root)."""
    from accvit_med.reports.predictions import read_predictions

    file = run.path / "predictions_test.csv"
    if not file.is_file():
        raise UserError(f"run '{run.path}' has no predictions_test.csv to verify the export on; finish training "
                        "or run accvit-med evaluate first")
    if data_dir is None and run.record.data_root is None:
        raise UserError(f"run '{run.path}' does not record its data root; pass --data-dir")
    root = Path(data_dir) if data_dir is not None else Path(run.record.data_root)
    paths = [root / p for p in read_predictions(file).paths[:limit]]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise UserError(f"test image '{missing}' of run '{run.path}' does not exist; pass --data-dir if the data moved")
    return paths


def max_difference(session, run: LoadedRun, paths: list[Path]) -> float:
    """max |ONNX Runtime - PyTorch| over the probabilities of ``paths``, batched and one by one."""
    images = [run.load_image(p) for p in paths]
    stats = run.normalisation
    batch = np.stack([normalise(image, stats.mean, stats.std) for image in images])
    with torch.inference_mode():
        expected = run.model(torch.stack([run.normalise(image) for image in images])).double().softmax(dim=1).numpy()
    together = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    alone = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: batch[i:i + 1]})[0] for i in range(len(batch))])
    return float(max(np.abs(together - expected).max(), np.abs(alone - expected).max()))


def check_export_target(out: Path) -> None:
    if out.suffix != ".onnx":
        raise UserError(f"--out '{out}' must end in .onnx (its sidecar is written beside it as .json)")
    for path in (out, sidecar_path(out)):
        if path.exists():
            raise UserError(f"'{path}' already exists; pass another --out or remove it")
    check_writable(out.parent)


def export_onnx(
    run_dir: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    *,
    checkpoint: str = "best",
    opset: int = DEFAULT_OPSET,
    verify_images: int = VERIFY_IMAGES,
    tolerance: float = TOLERANCE,
    data_dir: Optional[str | os.PathLike] = None,
) -> ExportResult:
    """Export ``run_dir``'s network to ``out`` (default ``<run>/export/<model>.onnx``) and its sidecar.

    Raises :class:`ExportVerificationFailed` (and writes nothing) when ONNX Runtime's probabilities
    on ``verify_images`` test images differ from the run's by more than ``tolerance``.
    """
    runtime.import_onnxruntime()  # before any work: verification needs it
    if opset < MIN_OPSET:
        raise UserError(f"--opset must be at least {MIN_OPSET} (LayerNorm), got {opset}")
    if verify_images < 1:
        raise UserError(f"--verify-images must be at least 1, got {verify_images}")
    started = time.perf_counter()
    if out is not None:  # before the run's network is built
        check_export_target(Path(out))
    run = load_run(run_dir, checkpoint=checkpoint, device="cpu")
    target = Path(out) if out is not None else default_export_path(run)
    check_export_target(target)
    paths = verification_images(run, data_dir, verify_images)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        write_graph(graph_model(run), run.image_size, partial, opset)
        difference = max_difference(runtime.open_session(partial), run, paths)
        if not difference <= tolerance:  # also refuses NaN
            raise ExportVerificationFailed(
                f"the ONNX export of run '{run.path}' fails verification: max |probability difference| "
                f"{difference:.3g} > {tolerance:g} on {len(paths)} test images; nothing written")
        sidecar = Sidecar(model=run.model_name, classes=list(run.classes), image_size=run.image_size,
                          mean=list(run.normalisation.mean), std=list(run.normalisation.std), opset=opset,
                          onnx_sha256=sha256_file(partial), run=str(run.path), checkpoint=checkpoint,
                          epoch=run.epoch, verification={"images": len(paths), "tolerance": tolerance,
                                                         "max_abs_probability_difference": difference})
        atomic_write_text(sidecar_path(target), sidecar.to_json())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return ExportResult(target, sidecar_path(target), opset, len(paths), difference, tolerance,
                        time.perf_counter() - started)
