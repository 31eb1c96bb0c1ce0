"""The CLI contract: --help, --version, unknown commands, and the one-line user-error rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accvit_med import UserError, __version__
from accvit_med.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "info" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"accvit-med {__version__}"


def test_unknown_command_exit_code_2():
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2
    assert "no-such-command" in result.output


def test_info_reports_versions():
    import torch

    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert torch.__version__ in result.output


@pytest.fixture
def failing_command():
    """Temporarily add a command that raises a UserError, as any real command would."""

    def boom() -> None:
        raise UserError("folder 'x' not found;\n pass --data-dir")

    app.command("boom-for-test")(boom)
    yield
    app.registered_commands.pop()


def test_user_error_is_one_line_exit_2(failing_command):
    result = runner.invoke(app, ["boom-for-test"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["accvit-med: error: folder 'x' not found; pass --data-dir"]
    assert "Traceback" not in result.output


def test_debug_shows_the_exception(failing_command):
    result = runner.invoke(app, ["--debug", "boom-for-test"])
    assert isinstance(result.exception, UserError)


def _entry_point() -> list[str]:
    exe = Path(sys.executable).with_name("accvit-med")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("accvit-med")
    if found is None:
        pytest.fail("the accvit-med console script is not installed (pip install -e .)")
    return [found]


def test_installed_entry_point_help_and_version():
    env = dict(os.environ, COLUMNS="120")
    done = subprocess.run(_entry_point() + ["--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "accvit-med" in done.stdout
    done = subprocess.run(_entry_point() + ["--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0
    assert done.stdout.strip() == f"accvit-med {__version__}"


def test_installed_entry_point_unknown_command():
    done = subprocess.run(_entry_point() + ["frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "frobnicate" in done.stderr


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "accvit_med", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert __version__ in done.stdout
