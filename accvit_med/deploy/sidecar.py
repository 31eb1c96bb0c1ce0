"""The JSON file beside an exported model: what inference needs besides the graph.

``FILE.onnx`` has its sidecar at ``FILE.json``::

    {"format": "accvit-med-onnx", "version": 1, "model": "accvit_femto",
     "classes": [...], "image_size": 224, "mean": [...], "std": [...],
     "input": "image", "output": "probabilities", "opset": 18, "dynamic_batch": true,
     "onnx_sha256": "...", "run": "...", "checkpoint": "best", "epoch": 3,
     "verification": {"images": 16, "max_abs_probability_difference": 3e-08, "tolerance": 0.0001}}

The graph takes normalised (batch, 3, image_size, image_size) float32 images and returns softmax
probabilities (batch, classes), columns in ``classes`` order.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accvit_med.errors import UserError

FORMAT = "accvit-med-onnx"
VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


@dataclass
class Sidecar:
    model: str
    classes: list[str]
    image_size: int
    mean: list[float]
    std: list[float]
    opset: int
    onnx_sha256: str
    run: str = ""
    checkpoint: str = ""
    epoch: int = 0
    verification: dict = field(default_factory=dict)
    input: str = INPUT_NAME
    output: str = OUTPUT_NAME
    dynamic_batch: bool = True
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def sidecar_path(onnx_file: str | os.PathLike) -> Path:
    return Path(onnx_file).with_suffix(".json")


def read_sidecar(onnx_file: str | os.PathLike) -> Sidecar:
    """The sidecar of ``onnx_file``; a missing or foreign file is a UserError naming it."""
    path = sidecar_path(onnx_file)
    if not path.is_file():
        raise UserError(f"'{onnx_file}' has no sidecar '{path}'; export it with accvit-med export --format onnx")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"sidecar '{path}' is not valid JSON; export the model again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"'{path}' is not an accvit-med ONNX sidecar; export the model again")
    if data.get("version", 0) > VERSION:
        raise UserError(f"sidecar '{path}' has version {data['version']}, newer than this accvit-med reads "
                        f"({VERSION}); upgrade accvit-med")
    known = {k: v for k, v in data.items() if k in Sidecar.__dataclass_fields__}
    try:
        return Sidecar(**known)
    except TypeError:
        raise UserError(f"sidecar '{path}' lacks required fields; export the model again") from None
