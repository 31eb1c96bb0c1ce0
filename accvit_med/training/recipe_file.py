"""A fine-tuning recipe from a file and the command line, and the recipe as printed before a run.

Precedence: defaults < ``--config FILE`` (JSON, TOML or YAML, keys named like the fields) < options
given on the command line; a resumed run starts from its stored data and recipe instead of the
defaults (:func:`resumed_values`). File values are coerced to the types the fields declare.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from accvit_med.errors import UserError
from accvit_med.recipe_fields import field_kinds
from accvit_med.training.recipe import FIELD_NAMES, RUNTIME_FIELDS, FinetuneConfig

_FIELD_KINDS: dict[str, type] = field_kinds(FinetuneConfig)  # what a recipe file's value is coerced to


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file: JSON, TOML or YAML, with keys named like FinetuneConfig's fields."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file '{path}' does not exist; pass an existing JSON, TOML or YAML file to --config")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError(f"reading '{path}' needs PyYAML (pip install pyyaml); "
                                "or write the recipe as TOML or JSON") from None
            data = yaml.safe_load(text)
        else:
            raise UserError(f"config file '{path}' must end in .json, .toml, .yaml or .yml")
    except UserError:
        raise
    except Exception as err:  # each parser has its own error type; all mean "not valid syntax"
        raise UserError(f"config file '{path}' is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a table of recipe keys, e.g. lr = 5e-5")
    # Accept dashes as on the command line (batch-size) as well as underscores.
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"config file '{path}' has unknown keys {unknown}; known keys: {', '.join(FIELD_NAMES)}")
    return data


def _coerce(name: str, value: Any) -> Any:
    """Bring a value from a file to the field's type (JSON/TOML may give 1 for 1.0, and so on)."""
    if value is None:
        return None
    kind = _FIELD_KINDS.get(name, str)
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as err:
        raise UserError(f"recipe key '{name}' has a bad value {value!r} ({err})") from None


def resolve_config(
    overrides: Mapping[str, Any], config_file: Optional[str | os.PathLike] = None
) -> FinetuneConfig:
    """Defaults, then the file, then ``overrides`` (entries that are None mean 'not given')."""
    return FinetuneConfig(**resolve_given(overrides, config_file)).validate()


def resumed_values(stored: FinetuneConfig, given: Mapping[str, Any]) -> FinetuneConfig:
    """What a resume asks for: the run's stored data and recipe, then ``given`` (see
    :func:`resolve_given`); the runtime options not given take today's defaults, not the stored ones."""
    kept = {k: v for k, v in stored.to_dict().items() if k not in RUNTIME_FIELDS or k == "split"}
    return FinetuneConfig(**{**kept, **given}).validate()


def resolve_given(overrides: Mapping[str, Any], config_file: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """The file's values, then ``overrides`` (None = not given), coerced to the fields' types."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown recipe fields {unknown}")
    return {k: _coerce(k, v) for k, v in values.items()}


def format_recipe(config: FinetuneConfig) -> str:
    """The resolved recipe, one ``key = value`` per line, for printing before a run."""
    width = max(len(name) for name in FIELD_NAMES)
    return "\n".join(f"{name:<{width}} = {getattr(config, name)!r}" for name in FIELD_NAMES)
