"""A torch Dataset over the rows of a split: (image tensor, class index, row index).

The row index travels with every sample so that predictions gathered from several processes (or
from a sampler that repeats rows) can be put back in split order exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from accvit_med.datasets.cache import ImageCache, decode_resized
from accvit_med.errors import UserError, file_system_error


class ImageReadError(UserError):
    """A UserError raised inside a DataLoader worker.

    The DataLoader re-raises a worker's exception in the main process by calling its class with
    ``"Caught ImageReadError in DataLoader worker ... Original Traceback ..."``; cutting that back to
    the original message keeps the one-line error contract.
    """

    _MARK = "ImageReadError: "

    def __init__(self, message: str):
        message = str(message)
        if message.startswith("Caught ") and self._MARK in message:
            message = message.rsplit(self._MARK, 1)[1]
        super().__init__(message)


class SplitImageDataset(Dataset):
    """Images listed by ``paths`` (relative to ``root``) with integer ``targets``."""

    def __init__(
        self,
        root: str | os.PathLike,
        paths: Sequence[str],
        targets: Sequence[int],
        image_size: int,
        transform: Callable[[Image.Image], torch.Tensor],
        cache: Optional[ImageCache] = None,
        metadata: Optional[dict[str, list[str]]] = None,
    ):
        if len(paths) != len(targets):
            raise ValueError("paths and targets differ in length")
        # Subgroup columns of the split (age, sex, eye...), row for row; they travel into the
        # predictions CSV so that a report can break results down without the split at hand.
        self.metadata = {name: list(values) for name, values in (metadata or {}).items()}
        self.root = Path(root)
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.image_size = image_size
        self.transform = transform
        self.cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> Image.Image:
        source = self.root / self.paths[index]
        try:
            if self.cache is not None:
                return self.cache.load(source)
            return decode_resized(source, self.image_size)
        except UserError as err:
            raise ImageReadError(str(err)) from None
        except OSError as err:  # e.g. a full disk under the cache: a worker's OSError loses its errno
            line = file_system_error(err)
            if line is None:
                raise
            raise ImageReadError(str(line)) from None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.transform(self.load_image(index)), self.targets[index], index
