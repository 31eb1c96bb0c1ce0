"""Recipe fields that describe themselves, so a recipe dataclass is the one source of truth.

A field made with :func:`documented` carries its help text (and, where the option is not spelled
``--<field-name>``, its flag) in ``dataclasses.field(metadata=...)``, as Hugging Face's
``HfArgumentParser`` reads dataclasses. The CLI derives one option per documented field from it
(name, help, default; see :mod:`accvit_med.cli.options`), and recipe files are coerced to the
types the fields declare (:func:`field_kinds`). A notebook uses the dataclass as it always did.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Optional


def documented(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    flag: Optional[str] = None,
    metavar: Optional[str] = None,
    shown_default: Optional[str] = None,
) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default: the value a run takes when nothing sets it.
        help: one sentence for ``--help`` (the default is shown by the CLI; do not restate it).
        default_factory: instead of ``default``, for a value computed when the recipe is made.
        flag: the option's spelling when it is not ``--<name with dashes>`` (e.g. ``--ema``).
        metavar: the value's placeholder in ``--help``.
        shown_default: how ``--help`` describes the default when the value itself would mislead
            (``min(8, CPUs)`` rather than this machine's count; ``off`` for None).
    """
    metadata = {"help": help, "flag": flag, "metavar": metavar, "shown_default": shown_default}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def documented_fields(recipe_cls: type) -> list[dataclasses.Field]:
    """The fields of ``recipe_cls`` made with :func:`documented`, in declaration order."""
    return [f for f in dataclasses.fields(recipe_cls) if "help" in f.metadata]


def field_kinds(recipe_cls: type) -> dict[str, type]:
    """{field name: its value type}, with ``Optional[X]`` read as ``X`` (None is always allowed)."""
    kinds = {}
    for name, hint in typing.get_type_hints(recipe_cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kinds[name] = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return kinds


def field_default(f: dataclasses.Field) -> Any:
    """The field's default value (calling its factory), or MISSING when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def format_value(value: Any) -> str:
    """A default as people write it: 5e-5 and 1e-8 (not Python's 5e-05), 0.001, 224, ta_wide."""
    return re.sub(r"e([+-])0+(?=\d)", r"e\1", str(value))
