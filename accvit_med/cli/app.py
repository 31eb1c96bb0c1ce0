"""The Typer application, its global options and the user-error contract.

Commands live one per module in :mod:`accvit_med.cli.commands`; each module defines
``register(app)``. They are discovered at start-up, so adding a command touches no shared file,
and only commands that exist (and work) are listed. Command modules import heavy libraries
(torch, pandas) inside their functions so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import Optional

import typer
from typer.core import TyperGroup

from accvit_med import __version__
from accvit_med.errors import UserError, file_system_error

PROG = "accvit-med"


class _Group(TyperGroup):
    """Turns a UserError raised anywhere below into the one-line contract (unless --debug).

    So does an OSError of the file system (disk full, read-only, a folder in the way...): whichever
    command met it, :func:`accvit_med.errors.file_system_error` words it. Other OSErrors are bugs and
    keep their traceback.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as err:
            self._fail(ctx, err)
        except OSError as err:
            line = file_system_error(err)
            if line is None:
                raise
            self._fail(ctx, line, cause=err)

    @staticmethod
    def _fail(ctx, err: UserError, cause: Optional[BaseException] = None) -> None:
        if ctx.meta.get("accvit_med.debug"):
            if cause is not None:
                raise cause
            raise err
        typer.echo(f"{PROG}: error: {err}", err=True)
        raise typer.Exit(code=err.exit_code) from None


app = typer.Typer(
    name=PROG,
    cls=_Group,
    help="Transfer learning on medical images with ACC-ViT and torchvision baselines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", envvar="ACCVIT_MED_DEBUG", help="Show full tracebacks for errors."
    ),
    dicom_window: Optional[str] = typer.Option(
        None, "--dicom-window", metavar="CENTER,WIDTH",
        help="Window for greyscale DICOM images, e.g. 40,400 (default: each file's first window).",
    ),
) -> None:
    """Transfer learning on medical images with ACC-ViT and torchvision baselines.

    The flow: split -> finetune -> report. Run `accvit-med COMMAND --help` for each step.
    """
    ctx.meta["accvit_med.debug"] = debug
    if dicom_window is not None:
        from accvit_med.datasets.dicom import WINDOW_ENV, parse_window

        center, width = parse_window(dicom_window)
        # An environment variable reaches data-loader workers and the runs a sweep starts.
        os.environ[WINDOW_ENV] = f"{center:g},{width:g}"


def _register_commands() -> None:
    from accvit_med.cli import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)


_register_commands()


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    # Keep thread pools from oversubscribing small machines when users set nothing.
    os.environ.setdefault("KMP_WARNINGS", "0")
    from accvit_med.env import tune_cpu_allocator

    tune_cpu_allocator()  # CPU training steps allocate many large tensors (see its docstring)
    app(args=argv, prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
