"""Checkpoints: weights_only-loadable, atomic, RNG states restored exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from accvit_med.errors import UserError
from accvit_med.rundir.checkpoints import (
    capture_rng_state,
    check_classes,
    checkpoint_kind,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_state,
)


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1)), float(np.random.randn())


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    np.random.randn()  # leaves a cached Gaussian in numpy's legacy state
    path = tmp_path / "last.pt"
    model = torch.nn.Linear(2, 2)
    save_checkpoint(path, {"rng": capture_rng_state(), "model": model.state_dict()})
    expected = _draws()
    _draws()
    restore_rng_state(torch.load(path, weights_only=True)["rng"])
    assert _draws() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_damaged_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


class Payload:
    """Any class: unpickling it would run code from the file."""


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": Payload()}, path)
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)


def test_class_lists_must_match_in_order():
    check_classes(["a", "b"], ["a", "b"], "run")
    with pytest.raises(UserError, match=r"run was trained on classes \['a', 'b'\] but the split has \['b', 'a'\]"):
        check_classes(["a", "b"], ["b", "a"], "run")


@pytest.mark.parametrize("kind,config", [("finetune", {"lr": 1e-4}), ("pretrain", {"task": "pretrain"})])
def test_checkpoints_say_their_kind_and_older_ones_without_it_still_load(tmp_path, kind, config):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    path = tmp_path / "last.pt"
    save_checkpoint(path, training_state(kind, model=model, optimizer=optimizer, scaler=scaler, epoch=0,
                                         config=config, classes=["a", "b"], history=[]))
    loaded = load_checkpoint(path)
    assert loaded["kind"] == kind == checkpoint_kind(loaded)
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    # A checkpoint written before "kind" existed: the same file without the key.
    older = tmp_path / "older.pt"
    torch.save({k: v for k, v in loaded.items() if k != "kind"}, older)
    assert checkpoint_kind(load_checkpoint(older)) == kind
