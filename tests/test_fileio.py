"""Atomic writes: a failure in the middle of a write leaves the previous file and nothing else."""

from __future__ import annotations

import os

import pytest
import torch

from accvit_med.fileio import atomic_open, atomic_write_json, atomic_write_text
from accvit_med.rundir.checkpoints import load_checkpoint, save_checkpoint


def _folder_listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_an_exception_half_way_through_keeps_the_old_file(tmp_path):
    target = tmp_path / "history.csv"
    atomic_write_text(target, "epoch,loss\n1,0.5\n")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_open(target) as handle:
            handle.write("epoch,loss\n1,0.5\n2,")  # half a row is out
            handle.flush()
            raise RuntimeError("disk gone")
    assert target.read_text() == "epoch,loss\n1,0.5\n"
    assert _folder_listing(tmp_path) == ["history.csv"]


def test_a_failing_flush_to_disk_keeps_the_old_file(tmp_path, monkeypatch):
    # The bytes are written, then fsync fails (disk full, I/O error): the rename must not happen.
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"accuracy": 0.5})
    before = target.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"accuracy": 0.9, "padding": "x" * 100_000})
    assert target.read_bytes() == before
    assert _folder_listing(tmp_path) == ["metrics.json"]


def test_a_checkpoint_write_killed_mid_stream_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from accvit_med import fileio

    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1, "model": {"w": torch.ones(3)}})

    real_fdopen = fileio.os.fdopen

    class HalfWriter:
        """The file object the writer gets: accepts half the bytes, then fails."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "fdopen", lambda fd, mode, **kw: HalfWriter(real_fdopen(fd, mode, **kw)))
    with pytest.raises(OSError, match="Input/output error"):
        save_checkpoint(target, {"epoch": 2, "model": {"w": torch.zeros(1000)}})
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1
    assert _folder_listing(tmp_path) == ["last.pt"]
