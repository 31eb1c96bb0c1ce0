"""Shared fixtures: a torchvision maxvit_t with random weights as the cached "ImageNet" file."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

MAXVIT_FILE = "maxvit_t-bc5ab103.pth"


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
