"""``accvit-med info``: versions and devices, for bug reports and for checking a GPU set-up."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info() -> None:
    """Show the versions of accvit-med and its main libraries, and the devices torch can use."""
    from accvit_med.env import environment_summary

    for key, value in environment_summary().items():
        typer.echo(f"{key:>14}: {value}")
