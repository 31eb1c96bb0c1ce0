"""Where a model's starting weights came from, as :func:`~accvit_med.models.registry.create` returns it.

A run's ``config.json`` keeps it under ``weights`` (:meth:`WeightsSource.to_record`): the choice,
the file and its sha256, and for an ACC-ViT initialised from MaxViT-T the inheritance summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class WeightsSource:
    """The starting weights of a model.

    Args:
        spec: ``"none"`` (random initialisation), ``"imagenet"`` (a library's pretrained file),
            ``"path"`` (a local state dict), or, for an inherited ACC-ViT, the user's word
            (``"imagenet"`` or ``"maxvit_t"``).
        file: the file the tensors were read from (None for random initialisation).
        inheritance: the summary of :mod:`.inheritance` when an ACC-ViT inherited MaxViT-T's weights.
        preprocessing: what the weights were trained with, from their own metadata (zoo models):
            input size, mean, std, interpolation (and torchvision's resize side, timm's crop fraction).
    """

    spec: str
    file: Optional[Path] = None
    inheritance: Optional[dict] = None
    preprocessing: Optional[dict] = None

    def to_record(self) -> dict:
        """``config.json``'s ``weights``: spec, file and sha256 (None where there is no file), and the
        inheritance summary when there is one. The sha256 is computed here, when it is asked for."""
        from accvit_med.fileio import sha256_file

        present = self.file is not None and self.file.is_file()
        record = {"spec": self.spec, "file": str(self.file) if present else None,
                  "sha256": sha256_file(self.file) if present else None}
        if self.inheritance is not None:
            record["inheritance"] = self.inheritance
        if self.preprocessing is not None:
            record["preprocessing"] = self.preprocessing
        return record


RANDOM = WeightsSource("none")
