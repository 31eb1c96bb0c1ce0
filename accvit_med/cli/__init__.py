"""The ``accvit-med`` command line: a thin Typer layer over the library."""

from accvit_med.cli.app import app, main

__all__ = ["app", "main"]
