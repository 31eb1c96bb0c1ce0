"""Shared fixtures (see docs/testing.md).

``model_summaries``: ``accvit-med models``' rows (parameters, GFLOPs) for every registry model at
224, counted once per session: the FLOP counts for Tables 2 and 8, the ``models`` command and the
check of the package's stored table read the same rows.

``maxvit_home``/``offline_cache``: a torchvision maxvit_t with random weights as the cached
"ImageNet" file. ``make_split`` builds a synthetic image folder and its split once per session for
each set of arguments, so the files that train on "some small labelled images" share the same few
folders instead of each writing its own. Tests that change a split copy it first (``copy_split``).

Tests that need a service the machine may lack ask ``helpers.services.require_service``: skipped
with one line where it is missing, failed instead where ``ACCVIT_MED_REQUIRE`` names it (CI).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Callable
from urllib.error import URLError

import pytest
import torch
import torchvision
from helpers.services import required_services

from accvit_med.datasets.create_split import create_split
from accvit_med.datasets.splits import read_split, write_split
from accvit_med.datasets.synthetic import make_image_folder

MAXVIT_FILE = "maxvit_t-bc5ab103.pth"


def pytest_configure(config):
    try:
        required_services()  # a misspelt ACCVIT_MED_REQUIRE stops the run before any test
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


@pytest.fixture(scope="session")
def maxvit_home(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A TORCH_HOME whose hub cache holds a random maxvit_t as torchvision's ImageNet file."""
    home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    maxvit = torchvision.models.maxvit_t()
    with torch.no_grad():  # non-default BatchNorm statistics, so the buffers must travel too
        for module in maxvit.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(maxvit.state_dict(), home / "hub" / "checkpoints" / MAXVIT_FILE)
    return home, maxvit.state_dict()


@pytest.fixture
def offline_cache(maxvit_home, monkeypatch):
    """TORCH_HOME = the session cache; any download attempt raises as it does offline."""
    home, state = maxvit_home
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(*args, **kwargs):
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return home, state


@pytest.fixture(scope="session")
def model_summaries():
    """Registry name -> ``ModelSummary`` (1000-class head, 224x224), design study included, counted
    now (not read from the package's table: the table is checked against these rows)."""
    from accvit_med.models.summary import summarize_models

    return {row.name: row for row in summarize_models(224, design_study=True, recount=True)}


@pytest.fixture(scope="session")
def make_split(tmp_path_factory) -> Callable[..., Path]:
    """``make_split(classes, per_class, size=(36, 36), seed=0)`` -> the split CSV of a synthetic folder.

    Built once per session per argument set; treat the files as read-only.
    """
    built: dict[tuple, Path] = {}

    def make(classes: tuple[str, ...], per_class, size: tuple[int, int] = (36, 36), seed: int = 0) -> Path:
        counts = tuple(sorted(per_class.items())) if isinstance(per_class, dict) else per_class
        key = (tuple(classes), counts, tuple(size), seed)
        if key not in built:
            root = tmp_path_factory.mktemp("toy")
            make_image_folder(root / "images", classes=tuple(classes), per_class=per_class, size=tuple(size), seed=seed)
            create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
            built[key] = root / "split.csv"
        return built[key]

    return make


@pytest.fixture
def copy_split(tmp_path) -> Callable[[Path], Path]:
    """``copy_split(split_csv)`` -> a private copy (same images) under ``tmp_path``, for tests that edit it."""

    def copy(split_csv: Path) -> Path:
        split = read_split(split_csv)
        target = tmp_path / "split-copy.csv"
        write_split(split.frame, dict(split.manifest), target)
        return target

    return copy
