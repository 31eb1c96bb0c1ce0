"""helpers.services: a missing service skips its tests with one line, or fails them when
ACCVIT_MED_REQUIRE names it; checked on pytest's own summary in a separate pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.services import REQUIRE_ENV, missing_commands, require_service, required_services

TESTS = Path(__file__).resolve().parent
NEEDS_SLURM = """
from helpers.services import require_service

def test_needs_slurm():
    require_service("slurm", {missing!r}, how="install the slurm-wlm and munge packages, then sudo make test-slurm")
"""


def _pytest(tmp_path: Path, missing, require: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs.py").write_text(NEEDS_SLURM.format(missing=missing))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop(REQUIRE_ENV, None)
    if require is not None:
        env[REQUIRE_ENV] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_needs.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_service_is_one_skip_line_saying_how_to_run_it(tmp_path):
    result = _pytest(tmp_path, "slurmd not installed", require=None)
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1, result.stdout
    assert "slurmd not installed" in skipped[0] and "slurm-wlm and munge packages" in skipped[0]
    assert "make test-slurm" in skipped[0]
    assert "1 skipped" in result.stdout


@pytest.mark.parametrize("require", ["slurm", " Slurm ,"])
def test_a_required_service_that_is_missing_fails(tmp_path, require):
    result = _pytest(tmp_path, "slurmd not installed", require=require)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout and "slurmd not installed" in result.stdout
    assert f"{REQUIRE_ENV} requires slurm" in result.stdout


def test_an_available_service_runs_its_test_even_when_required(tmp_path):
    result = _pytest(tmp_path, None, require="slurm")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


def test_the_requirement_is_a_comma_separated_list(monkeypatch):
    monkeypatch.setattr("helpers.services.SERVICES", {"slurm": "a cluster", "chromium": "a browser"})
    assert required_services({REQUIRE_ENV: "chromium, SLURM"}) == {"slurm", "chromium"}
    assert required_services({}) == set()


def test_a_misspelt_requirement_is_refused():
    with pytest.raises(ValueError, match="unknown service.*slrum"):
        required_services({REQUIRE_ENV: "slrum"})
    with pytest.raises(ValueError, match="unknown service"):
        require_service("slrum", None, how="-")
    assert required_services({REQUIRE_ENV: " "}) == set()


def test_missing_commands_names_only_what_path_lacks(tmp_path, monkeypatch):
    (tmp_path / "present").write_text("#!/bin/sh\n")
    (tmp_path / "present").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("helpers.services.SBIN", ())
    assert missing_commands("present") is None
    assert missing_commands("present", "absent-a", "absent-b") == "absent-a, absent-b not installed"
    # a daemon outside a user's PATH still counts as installed
    monkeypatch.setattr("helpers.services.SBIN", (str(tmp_path / "sbin"),))
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin" / "absent-a").write_text("#!/bin/sh\n")
    (tmp_path / "sbin" / "absent-a").chmod(0o755)
    assert missing_commands("absent-a", "absent-b") == "absent-b not installed"
