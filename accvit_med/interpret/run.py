"""A fine-tuned run, ready for inference: its network with a checkpoint's weights and its preprocessing.

``load_run(run_dir)`` reads what ``accvit-med finetune`` wrote (config.json and
checkpoints/<best|last>.pt) and rebuilds exactly the evaluation pipeline of training: the same
decode-resize-crop (:func:`accvit_med.datasets.cache.decode_resized`, the function the training
Dataset calls) and the same normalisation (:func:`accvit_med.datasets.transforms.eval_transform` with the
statistics of the run's starting weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from PIL import Image
from torch import nn

from accvit_med.datasets.cache import decode_resized
from accvit_med.datasets.dicom import check_run_window
from accvit_med.datasets.torchdata import SplitImageDataset
from accvit_med.datasets.transforms import Normalisation, eval_transform
from accvit_med.devices import resolve_device
from accvit_med.rundir.checkpoints import load_run_model
from accvit_med.rundir.layout import RunDir
from accvit_med.rundir.record import RunRecord


@dataclass
class LoadedRun:
    """A run's network (in eval mode, on ``device``) and everything needed to feed it."""

    path: Path
    model: nn.Module
    model_name: str
    classes: list[str]
    image_size: int
    device: torch.device
    checkpoint: str
    epoch: int
    record: RunRecord  # the run's config.json

    @property
    def normalisation(self) -> Normalisation:
        """The statistics the run was trained with (its starting weights': ImageNet's, or a zoo model's)."""
        return Normalisation.of_weights(self.record.weights)

    @property
    def label(self) -> str:
        """A short name for tables and figure columns: the model, then the run folder."""
        return f"{self.model_name}/{self.path.name}"

    def load_image(self, path: str | os.PathLike) -> Image.Image:
        """The RGB image at the run's input size, as the model sees it before normalisation."""
        return decode_resized(path, self.image_size)

    def normalise(self, image: Image.Image) -> torch.Tensor:
        """The (3, size, size) tensor the model takes, from an image of :meth:`load_image`."""
        return eval_transform(self.normalisation)(image)

    def preprocess(self, path: str | os.PathLike) -> torch.Tensor:
        """The normalised tensor of one image, exactly as in the run's evaluation."""
        return self.normalise(self.load_image(path))

    def dataset(self, paths: Sequence[str | os.PathLike]) -> SplitImageDataset:
        """The training code's own Dataset over ``paths``: items are (tensor, 0, index)."""
        # Root "." keeps absolute paths absolute and relative ones relative to the working folder.
        return SplitImageDataset(".", [str(p) for p in paths], [0] * len(paths), self.image_size,
                                  eval_transform(self.normalisation))


def load_run(
    run_dir: str | os.PathLike,
    checkpoint: str = "best",
    device: str = "auto",
    model_factory: Optional[Callable[[int], nn.Module]] = None,
) -> LoadedRun:
    """The network of ``run_dir`` with the weights of checkpoints/<checkpoint>.pt, in eval mode.

    model_factory: the same factory the run was trained with, for runs of a custom network
    (config.json then records its name instead of a registry model).
    """
    run = RunDir(Path(run_dir))
    run.checkpoint(checkpoint)  # a bad --checkpoint is refused before anything is read
    record = run.record(kind="finetune")
    check_run_window(record.dicom_window, run.path)
    model, state = load_run_model(run, record, checkpoint, model_factory)
    target = resolve_device(device)
    model.to(target).eval()
    return LoadedRun(run.path, model, record.model, list(record.classes), int(record.recipe.image_size), target,
                     checkpoint, int(state["epoch"]), record)
