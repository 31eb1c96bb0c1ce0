"""Options declared once: shared ``Annotated`` aliases, and options derived from a recipe dataclass.

Shared options (as huggingface_hub's CLI does) are type aliases a command uses as a parameter's
annotation, with its own default: ``device: DeviceOpt = "auto"``. Where a command's default is
described rather than a value (``the run's``), :func:`shown` gives the alias that text.

:func:`recipe_options` adds one option per :func:`accvit_med.recipe_fields.documented` field of a
recipe dataclass (name, help, default from the field) and hands the command the values given on
the command line as one dict, so a recipe value is written once, in the dataclass. Options default
to None (= not given) so that the precedence defaults < ``--config FILE`` < command line holds,
while ``--help`` shows the recipe's real default.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from copy import copy
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional

import typer
from typer.models import OptionInfo

from accvit_med.recipe_fields import documented_fields, field_default, field_kinds, format_value

DEVICE_HELP = "auto (cuda, then cpu), cpu, cuda or cuda:N."

# Data: a data set and its split (finetune, prepare).
DatasetOpt = Annotated[
    Optional[str], typer.Option("--dataset", help="Dataset name; without --split uses splits/<name>.csv.")
]
SplitOpt = Annotated[Optional[Path], typer.Option("--split", help="Split CSV written by `accvit-med split`.")]
RunDataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Data root, if it moved since training.")]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", help="Data root, if not the one in the split's manifest.",
                                 show_default="the split manifest's data root")
]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the resized-image cache lives.",
                                                     show_default="<data root>/.accvit-cache")]
# A run directory and which of its checkpoints (evaluate, predict, gradcam).
RunOpt = Annotated[Path, typer.Option("--run", help="Run directory written by `accvit-med finetune`.")]
RunsOpt = Annotated[List[Path], typer.Option(
    "--run", help="Run directory written by `accvit-med finetune`; repeat it for the runs' ensemble.")]
CalibrateOpt = Annotated[bool, typer.Option(
    "--calibrate/--no-calibrate",
    help="Ensembles: average probabilities temperature-scaled on each run's validation predictions.")]
CheckpointOpt = Annotated[str, typer.Option("--checkpoint", help="best or last.")]
TrackOpt = Annotated[Optional[str], typer.Option(
    "--track", envvar="ACCVIT_MED_TRACK",
    help="Also log the run to tensorboard (<run>/tensorboard/) or mlflow (MLFLOW_TRACKING_URI).")]
# How to run.
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading processes.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch.")]
ImageSizeOpt = Annotated[
    int, typer.Option("--image-size", min=1, help="Input side (ACC-ViT, MaxViT: a multiple of 224).")
]
# Run directories: starting again or continuing.
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run from its checkpoints/last.pt.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Delete an existing run directory and start again.")]


def shown(alias: Any, default_text: str) -> Any:
    """``alias`` whose ``--help`` describes its default as ``default_text`` (e.g. "the run's")."""
    base, info = typing.get_args(alias)
    info = copy(info)
    info.show_default = default_text
    return Annotated[base, info]


def recipe_options(
    recipe_cls: type,
    into: str = "recipe",
    *,
    exclude: tuple[str, ...] = (),
    shown_defaults: Optional[dict[str, str]] = None,
) -> Callable[[Callable], Callable]:
    """Decorate a command so it takes one option per documented field of ``recipe_cls``.

    The command declares a parameter named ``into``; it receives ``{field: value}`` for every
    recipe field given on the command line (fields not given are left out), including fields the
    command declares itself with a shared alias (``device: DeviceOpt = None``), whose ``--help``
    then shows the recipe's default too. The derived options take the place of ``into`` in the
    command's signature (and so in ``--help``), in field order.

    Args:
        recipe_cls: the recipe dataclass (e.g. FinetuneConfig).
        into: name of the command's parameter that receives the given recipe values.
        exclude: recipe fields the command takes as ordinary parameters (e.g. pretrain's --model).
        shown_defaults: ``--help``'s text for defaults the dataclass cannot hold (per-model values).
    """
    kinds = field_kinds(recipe_cls)
    field_names = {f.name for f in dataclasses.fields(recipe_cls)} - set(exclude)
    texts = shown_defaults or {}

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True).parameters
        # Programming errors, caught at import: derived options need a place, and a recipe field with
        # a default of the command's own would always count as given (and override --config).
        if into not in own:
            raise TypeError(f"{command.__name__} needs a parameter {into!r} for the recipe options")
        fixed = [name for name, p in own.items() if name in field_names and p.default is not None]
        if fixed:
            raise TypeError(f"{command.__name__}: recipe fields {fixed} must default to None (= not given)")
        declared = {name: _with_recipe_default(p, recipe_cls) for name, p in own.items() if name in field_names}
        derived = [_derived_parameter(f, kinds[f.name], texts.get(f.name))
                   for f in documented_fields(recipe_cls) if f.name not in own and f.name in field_names]
        parameters = []
        for name, p in own.items():  # the derived options go where the command's ``into`` parameter is
            keyword = declared.get(name, p).replace(kind=inspect.Parameter.KEYWORD_ONLY)
            parameters += derived if name == into else [keyword]
        recipe_names = {p.name for p in derived} | set(declared)

        def wrapper(**values: Any) -> Any:
            given = {name: values.pop(name) for name in list(values) if name in recipe_names}
            given = {name: value for name, value in given.items() if value is not None}
            return command(**{into: given}, **values)

        wrapper.__name__, wrapper.__qualname__ = command.__name__, command.__qualname__
        wrapper.__doc__, wrapper.__module__ = command.__doc__, command.__module__
        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _derived_parameter(f: dataclasses.Field, kind: type, default_text: Optional[str]) -> inspect.Parameter:
    """The option of one documented recipe field: ``--name`` (``--name/--no-name`` for a bool)."""
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    if kind is bool:
        flag = f"{flag}/--no-{flag[2:]}"
    info = typer.Option(flag, help=f.metadata["help"], metavar=f.metadata.get("metavar"),
                        show_default=default_text or _default_text(f))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], info])


def _with_recipe_default(parameter: inspect.Parameter, recipe_cls: type) -> inspect.Parameter:
    """A command's own (shared-alias) parameter for a recipe field, showing the field's default."""
    base, *extras = typing.get_args(parameter.annotation)
    infos = [copy(e) for e in extras if isinstance(e, OptionInfo)]
    if not infos or infos[0].show_default is not True:
        return parameter  # a default of the command's own, or a described one (``shown``)
    f = next(f for f in dataclasses.fields(recipe_cls) if f.name == parameter.name)
    infos[0].show_default = _default_text(f)
    return parameter.replace(annotation=Annotated[base, infos[0]])


def _default_text(f: dataclasses.Field) -> Any:
    """What ``--help`` shows as the field's default: its text, its value, or nothing (None)."""
    if f.metadata.get("shown_default"):
        return f.metadata["shown_default"]
    value = field_default(f)
    if value is dataclasses.MISSING or value is None:
        return False
    if isinstance(value, bool):
        return ("" if value else "no-") + (f.metadata.get("flag") or f.name.replace("_", "-")).lstrip("-")
    return format_value(value)
