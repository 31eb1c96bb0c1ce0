"""Predictions from an exported model with ONNX Runtime and numpy: no torch, no model code.

>>> from accvit_med.deploy.runtime import load_onnx
>>> model = load_onnx("export/accvit_tiny.onnx")        # reads export/accvit_tiny.json beside it
>>> model.predict(["scan.png"], tta="h").probabilities
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from accvit_med.deploy.sidecar import Sidecar, read_sidecar
from accvit_med.errors import UserError
from accvit_med.fileio import sha256_file
from accvit_med.interpret.results import ImagePredictions, check_tta
from accvit_med.progress import progress_bar, show_progress

INSTALL_HINT = "pip install 'accvit-med[onnx]'"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"ONNX Runtime is not installed; {INSTALL_HINT}") from None
    return onnxruntime


def open_session(path: str | os.PathLike) -> Any:
    """An ONNX Runtime session on the CPU; a file it cannot load is a UserError naming it."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"ONNX Runtime cannot load '{path}' ({first}); export the model again") from None


def flip_views(batch: np.ndarray, tta: str) -> list[np.ndarray]:
    """The views of a (B, 3, H, W) batch whose softmax is averaged (as :func:`..interpret.predict.tta_views`)."""
    views = [batch]
    if tta in ("h", "hv"):
        views.append(np.ascontiguousarray(batch[..., ::-1]))
    if tta == "hv":
        views.append(np.ascontiguousarray(batch[..., ::-1, :]))
    return views


@dataclass
class OnnxModel:
    """An exported run: its ONNX Runtime session and the sidecar that says how to feed it."""

    path: Path
    session: Any
    sidecar: Sidecar

    @property
    def classes(self) -> list[str]:
        return list(self.sidecar.classes)

    @property
    def label(self) -> str:
        return f"{self.sidecar.model}/{self.path.name}"

    def probabilities(self, batch: np.ndarray, tta: str = "none") -> np.ndarray:
        """Mean softmax (B, k), float64, over the TTA views of a normalised float32 batch."""
        check_tta(tta)
        names, input_name = [self.sidecar.output], self.sidecar.input
        outputs = [self.session.run(names, {input_name: view})[0] for view in flip_views(batch, tta)]
        return np.mean([o.astype(np.float64) for o in outputs], axis=0)

    def load_image(self, path: str | os.PathLike) -> np.ndarray:
        from accvit_med.deploy.preprocess import load_normalised

        s = self.sidecar
        return load_normalised(path, s.image_size, s.mean, s.std)

    def predict(self, paths: Sequence[str | os.PathLike], tta: str = "none", batch_size: int = 32,
                workers: int = 1, progress: bool = True) -> ImagePredictions:
        """Probabilities for every image of ``paths`` (in order); images decode in ``workers`` threads."""
        check_tta(tta)
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        rows: list[np.ndarray] = []
        # Threads: Pillow releases the GIL while decoding, and ONNX Runtime while computing.
        with ThreadPoolExecutor(max(1, workers)) as pool, progress_bar(show_progress(progress)) as bar:
            task = bar.add_task(f"predict {self.label}", total=len(paths))
            for start in range(0, len(paths), batch_size):
                batch = np.stack(list(pool.map(self.load_image, paths[start:start + batch_size])))
                rows.append(self.probabilities(batch, tta))
                bar.advance(task, len(batch))
        probabilities = np.concatenate(rows) if rows else np.zeros((0, len(self.classes)))
        return ImagePredictions([str(p) for p in paths], probabilities, self.classes)


def load_onnx(path: str | os.PathLike, check_hash: bool = True) -> OnnxModel:
    """``path`` (an exported ``.onnx``) with its sidecar; the pair must belong together."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file '{path}' does not exist; export one with accvit-med export --run RUN --format onnx")
    sidecar = read_sidecar(path)
    if check_hash and sha256_file(path) != sidecar.onnx_sha256:
        raise UserError(f"'{path}' is not the file its sidecar '{path.with_suffix('.json')}' describes "
                        "(checksum differs); export the model again")
    return OnnxModel(path, open_session(path), sidecar)
