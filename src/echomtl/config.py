"""Configuration and experiment-table validation.

Both are validated with ``snakemake.utils.validate`` (which also fills schema defaults) before any
job runs; on failure we re-raise with one line per problem that names the config key (or the
TSV row and column) and what is allowed, because jsonschema's own message buries the key in a
schema dump.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml
from snakemake.utils import validate

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO_ROOT / "config" / "schema" / "config.schema.yaml"
EXPERIMENTS_SCHEMA = REPO_ROOT / "config" / "schema" / "experiments.schema.yaml"


class ConfigError(ValueError):
    """A configuration or experiment table that does not match its schema."""


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    allowed = ""
    if error.validator == "enum":
        allowed = f" (allowed: {', '.join(map(repr, error.validator_value))})"
    elif error.validator == "additionalProperties":
        allowed = f" (allowed keys: {', '.join(sorted(error.schema.get('properties', {})))})"
    return f"{key}: {error.message}{allowed}"


def _problems(instance: Any, schema_path: Path) -> list[str]:
    schema = yaml.safe_load(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [_describe(e) for e in sorted(validator.iter_errors(instance), key=str)]


def validate_config(
    config: dict, schema_path: Path = CONFIG_SCHEMA, source: str = "config"
) -> dict:
    """Validate ``config`` in place (defaults filled) or raise ConfigError naming every bad key."""
    problems = _problems(config, schema_path)
    if problems:
        raise ConfigError(f"invalid {source}:\n  " + "\n  ".join(problems))
    validate(config, str(schema_path), set_default=True)
    return config


def load_config(path: Path) -> dict:
    """Read and validate a YAML config file."""
    with open(path) as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(config).__name__}")
    return validate_config(config, source=str(path))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return value


def load_experiments(path: Path, schema_path: Path = EXPERIMENTS_SCHEMA) -> pd.DataFrame:
    """Read the experiments table; every row is checked, errors name the row and column."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    numeric = ("w_det", "w_cls", "alpha")
    problems: list[str] = []
    rows = []
    for line, raw in enumerate(table.to_dict("records"), start=2):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            value = value.strip()
            if value == "":
                row[key] = None
                continue
            if key in numeric:
                try:
                    row[key] = float(value)
                except ValueError:
                    problems.append(f"{path}:{line}: column {key}: {value!r} is not a number")
                    continue
            else:
                row[key] = _clean(value)
        row = {k: v for k, v in row.items() if v is not None or k in ("alpha",)}
        for problem in _problems(row, schema_path):
            problems.append(f"{path}:{line}: {problem}")
        if row.get("method") == "gradnorm" and row.get("alpha") is None:
            problems.append(f"{path}:{line}: column alpha: method gradnorm needs an alpha")
        if row.get("model") == "det_only" and row.get("method") != "fixed":
            problems.append(f"{path}:{line}: column method: det_only has one task, use 'fixed'")
        rows.append(row)
    names = [r.get("experiment") for r in rows]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"{path}: duplicate experiment names: {', '.join(duplicated)}")
    if problems:
        raise ConfigError(f"invalid experiments table {path}:\n  " + "\n  ".join(problems))
    frame = pd.DataFrame(rows).set_index("experiment", drop=False)
    for column in ("split", "scale", "description"):
        if column not in frame:
            frame[column] = None
    return frame
