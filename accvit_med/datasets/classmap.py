"""Which class of a trained run each class of an external data set is.

Classes are matched by name (exactly, then ignoring case), after the default map of a known pair
(ISIC 2019 -> HAM10000: AK is akiec, SCC has none) and a user's ``--class-map FILE``: a TOML or
JSON table ``target class = "run class"`` (an empty string: no class of the run). A target class
left without a run class is reported and its images are left out; it is never guessed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from accvit_med.errors import UserError


@dataclass
class ClassMatch:
    """``mapping``: target class -> run class, or None (left out); ``how``: why, per target class."""

    mapping: dict[str, Optional[str]]
    how: dict[str, str] = field(default_factory=dict)

    @property
    def unmatched(self) -> list[str]:
        return [c for c, run_class in self.mapping.items() if run_class is None]


def read_class_map(path: str | os.PathLike) -> dict[str, Optional[str]]:
    """A TOML (``.toml``) or JSON file of ``target class -> run class`` ("" or null: none)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--class-map '{path}' not found; pass a TOML or JSON file of target class = run class")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            table = _toml().loads(text)
        else:
            table = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"--class-map '{path}' is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} "
                        f"({first}); write one line per class, e.g. AK = \"akiec\"") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) or v is None for v in table.values()):
        raise UserError(f"--class-map '{path}' must map each target class name to a run class name (a string)")
    return {str(k): (v or None) for k, v in table.items()}


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UserError("a TOML --class-map needs Python 3.11 (or the tomli package); write it as JSON") from None
    return tomllib


def match_classes(
    target_classes: Sequence[str],
    run_classes: Sequence[str],
    default_map: Optional[Mapping[str, Optional[str]]] = None,
    user_map: Optional[Mapping[str, Optional[str]]] = None,
    source: str = "--class-map",
) -> ClassMatch:
    """Map every target class to a run class (or None): user map, then default map, then names."""
    run_classes = list(run_classes)
    for where, table in ((source, user_map or {}), ("the default class map", default_map or {})):
        unknown_targets = sorted(set(table) - set(target_classes))
        if table is user_map and unknown_targets:
            raise UserError(f"{source} names class '{unknown_targets[0]}', which the external data set does not "
                            f"have (its classes: {', '.join(target_classes)})")
        bad = sorted({v for v in table.values() if v is not None} - set(run_classes))
        if bad:
            raise UserError(f"{where} maps to '{bad[0]}', which is not a class of the run "
                            f"({', '.join(run_classes)}); use the run's class names")
    lowered = {c.lower(): c for c in run_classes}
    match = ClassMatch({})
    for target in target_classes:
        if user_map and target in user_map:
            match.mapping[target], match.how[target] = user_map[target], source
        elif default_map and target in default_map:
            match.mapping[target], match.how[target] = default_map[target], "default class map"
        elif target in run_classes:
            match.mapping[target], match.how[target] = target, "same name"
        elif target.lower() in lowered:
            match.mapping[target], match.how[target] = lowered[target.lower()], "same name (case ignored)"
        else:
            match.mapping[target], match.how[target] = None, "no class of the run has this name"
    taken = [c for c in match.mapping.values() if c is not None]
    if not taken:
        raise UserError(f"no class of the external data set ({', '.join(target_classes)}) matches a class of the "
                        f"run ({', '.join(run_classes)}); pass --class-map FILE (target class = run class)")
    return match
