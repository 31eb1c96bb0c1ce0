"""Style: ruff with the project's configuration (pyproject.toml's [tool.ruff]) finds nothing in the repository."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff_command() -> list[str]:
    """The ruff installed next to this interpreter (the test extra), else ``python -m ruff``."""
    beside = Path(sys.executable).with_name("ruff")
    if beside.is_file():
        return [str(beside)]
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the test extra: pip install -e '.[test]')")
    return [sys.executable, "-m", "ruff"]


def ruff_findings(*paths: str) -> subprocess.CompletedProcess:
    """``ruff check`` from the repository root, so it reads pyproject.toml and its excludes."""
    command = [*ruff_command(), "check", "--no-cache", "--output-format", "concise", *(paths or (".",))]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_repository_is_ruff_clean():
    result = ruff_findings()
    assert result.returncode == 0, f"ruff check found:\n{result.stdout}{result.stderr}"
