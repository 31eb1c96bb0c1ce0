"""Driving the CLI in-process: one runner, the cheap training options, and the exit-code checks.

``fails`` asserts what every refusal must look like: the expected exit code, exactly one
``accvit-med: error: ...`` line on stderr and no traceback.
"""

from __future__ import annotations

from typer.testing import CliRunner

from accvit_med.cli import app
from helpers.quadrant_runs import SIDE

runner = CliRunner()
# one epoch of the shrunk ConvNeXt (helpers.tiny_models) on SIDE px images
TRAIN = ["--model", "convnext_tiny", "--weights", "none", "--epochs", "1", "--batch-size", "4", "--workers", "0",
         "--image-size", str(SIDE)]


def fails(args: list[str], code: int = 2, match: str = "") -> str:
    """Invoke the CLI; assert ``code``, ONE error line on stderr, no traceback; return that line."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("accvit-med: error:")]
    assert len(errors) == 1, result.stderr
    if code == 2:  # checked before any work: the error line is all there is on stderr
        assert result.stderr.strip().splitlines() == errors, result.stderr
    assert match in errors[0], errors[0]
    return errors[0]


def succeeds(args: list[str]):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return result
