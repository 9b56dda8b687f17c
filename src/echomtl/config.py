"""Configuration and experiment-table validation.

Both are validated with ``snakemake.utils.validate`` (which also fills schema defaults) before any
job runs; on failure we re-raise with one line per problem that names the config key (or the
TSV row and column) and what is allowed, because jsonschema's own message buries the key in a
schema dump.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml
from snakemake.utils import validate

from echomtl.methods import METHODS, MODEL_VARIANTS


def _schema(name: str) -> Path:
    """A schema shipped as package data (found the same way in a wheel and in a checkout)."""
    return Path(str(files("echomtl") / "schema" / name))


CONFIG_SCHEMA = _schema("config.schema.yaml")
EXPERIMENTS_SCHEMA = _schema("experiments.schema.yaml")


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


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    return value


def experiment_tables(value: str | Sequence[str]) -> list[Path]:
    """Config ``experiments``: one TSV path or a list of them (read in order, concatenated)."""
    return [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def load_experiments(
    paths: Path | str | Sequence[Path | str], schema_path: Path = EXPERIMENTS_SCHEMA
) -> pd.DataFrame:
    """Read the experiments table(s); every row is checked, errors name the file, row and column.

    Several tables are concatenated (the paper-scale study adds rows to the default one); an
    experiment name may appear once across all of them.
    """
    problems: list[str] = []
    rows = []
    origin: dict[str, str] = {}
    for path in experiment_tables(paths):
        for line, row in _table_rows(path, schema_path, problems):
            name = row.get("experiment")
            if name in origin:
                problems.append(
                    f"{path}:{line}: experiment {name!r} is already defined at {origin[name]}"
                )
            elif name is not None:
                origin[name] = f"{path}:{line}"
            rows.append(row)
    if problems:
        raise ConfigError("invalid experiments table:\n  " + "\n  ".join(problems))
    frame = pd.DataFrame(rows).set_index("experiment", drop=False)
    frame.index.name = None
    for column in ("split", "scale", "init", "description"):
        if column not in frame:
            frame[column] = None
    return frame


def numeric_columns(schema_path: Path = EXPERIMENTS_SCHEMA) -> tuple[str, ...]:
    """The experiments-table columns the schema types as numbers (read as floats)."""
    properties = yaml.safe_load(schema_path.read_text())["properties"]
    return tuple(
        name
        for name, spec in properties.items()
        if {"number", "integer"}
        & set(
            spec.get("type", []) if isinstance(spec.get("type"), list) else [spec.get("type")]
        )  # fmt: skip
    )


def _table_rows(
    path: Path, schema_path: Path, problems: list[str]
) -> list[tuple[int, dict[str, Any]]]:
    """The rows of one TSV with their line numbers; problems are appended, not raised."""
    if not path.is_file():
        problems.append(f"{path}: no such experiments table (config key experiments)")
        return []
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    numeric = numeric_columns(schema_path)
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
        method = row.get("method")
        if method is not None and method not in METHODS:
            problems.append(
                f"{path}:{line}: column method: {method!r} is not a balancing method "
                f"(allowed: {', '.join(METHODS)})"
            )
        elif method is not None and METHODS[method].missing():
            problems.append(
                f"{path}:{line}: column method: {method!r} needs "
                f"{', '.join(METHODS[method].missing())}, not installed here (torchjd's optional "
                "extra for this aggregator)"
            )
        if method == "gradnorm" and row.get("alpha") is None:
            problems.append(f"{path}:{line}: column alpha: method gradnorm needs an alpha")
        model = row.get("model")
        if model is not None and model not in MODEL_VARIANTS:
            problems.append(
                f"{path}:{line}: column model: {model!r} is not a model variant "
                f"(allowed: {', '.join(MODEL_VARIANTS)})"
            )
        elif model is not None and "det" in MODEL_VARIANTS[model].tasks and row.get("w_det") == 0:
            problems.append(
                f"{path}:{line}: column w_det: model {model} trains a detector, so its weight "
                "must be above 0"
            )
        elif model is not None and not MODEL_VARIANTS[model].shares_gradients and method != "fixed":
            problems.append(
                f"{path}:{line}: column method: model {model} shares no gradient between "
                "the tasks, so balancing has nothing to act on; use 'fixed'"
            )
        rows.append((line, row))
    return rows


def check_study_config(config: dict, schemes: set[str], export_root: Path | None) -> None:
    """What the schema cannot say, checked at parse time (before any job); names the config key.

    ``schemes``: the split schemes the study's experiments use; ``export_root``: the export when
    ``data.source`` is ``export``.
    """
    from echomtl.data.export_reader import check_data_yaml
    from echomtl.data.splits import check_fractions

    problems = []
    data = config["data"]
    if "grouped" in schemes:
        fractions = dict(data["grouped_fractions"])
        try:
            check_fractions(fractions)
        except ValueError as exc:
            problems.append(f"data.grouped_fractions: {exc}")
        for split in ("train", "valid", "test"):
            if not float(fractions.get(split, 0.0)) > 0:
                needed = {
                    "train": "training",
                    "valid": "model selection (manual grid) and validation metrics",
                    "test": "the test metrics the paper reports",
                }[split]
                problems.append(
                    f"data.grouped_fractions.{split}: must be > 0 (the {split} split is needed "
                    f"for {needed}), got {fractions.get(split, 0.0)}"
                )
    if export_root is not None:
        try:
            check_data_yaml(export_root, list(data["class_names"]))
        except ValueError as exc:
            problems.append(f"data.class_names: {exc}")
        problems += patient_count_problems(config, schemes, export_patients(export_root))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def export_patients(root: Path) -> set[str]:
    """Patient ids of an export from its image file names alone (no file is opened)."""
    from echomtl.data.export_reader import IMAGE_EXTENSIONS, parse_identity

    patients = set()
    for images in sorted(root.glob("*/images")):
        for name in os.listdir(images):
            path = Path(name)
            if path.suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                patients.add(parse_identity(path.stem)[0])
    return patients


def patient_count_problems(config: dict, schemes: set[str], patients: set[str]) -> list[str]:
    """What the patient count alone shows about ``data.min_patients``, before any job.

    The split jobs check the exact assignment (patients are placed whole, weighted by their
    images and boxes, so a split can hold fewer patients than its fraction); this is the
    necessary condition that file names already decide: every split's share of the patients
    must reach ``min_patients``. An export with no image is left to the data jobs' errors.
    """
    data, n = config["data"], len(patients)
    need = int(data.get("min_patients", 1))
    if n == 0:
        return []
    problems = []
    if "grouped" in schemes:
        for split, fraction in dict(data["grouped_fractions"]).items():
            if 0 < float(fraction) and float(fraction) * n < need:
                problems.append(
                    f"data.grouped_fractions.{split}: {float(fraction):g} of {n} patients is "
                    f"{float(fraction) * n:.1f} patients, fewer than data.min_patients ({need})"
                )
    if "cv" in schemes:
        folds = int(data["cv_folds"])
        valid = (n - n / folds) * float(data["cv_valid_fraction"])
        if n / folds < need:
            problems.append(
                f"data.cv_folds: {folds} folds of {n} patients give test folds of "
                f"{n / folds:.1f} patients, fewer than data.min_patients ({need})"
            )
        elif valid < need:
            problems.append(
                f"data.cv_valid_fraction: {float(data['cv_valid_fraction']):g} of the "
                f"{n - n / folds:.1f} patients outside a test fold is {valid:.1f}, fewer than "
                f"data.min_patients ({need})"
            )
    return problems


#: Starts of a run (one list, echomtl.study.INITS), named here for the trainer's check.


def weights_path(config: dict) -> Path | None:
    """Config ``model.weights`` as a path (``$VARS`` and ``~`` expanded), or None (random start).

    Checked here, at parse time: a path that names no file stops the workflow before any job,
    naming the key (and the variable when one was left unexpanded).
    """
    value = config["model"].get("weights")
    if value is None:
        return None
    path = Path(os.path.expanduser(os.path.expandvars(str(value))))
    if not path.is_file():
        unset = "$" in str(path)
        raise ConfigError(
            f"invalid config:\n  model.weights: {value!r}"
            + (f" (expanded: {str(path)!r})" if str(path) != str(value) else "")
            + " is not a file"
            + ("; an environment variable it names is not set" if unset else "")
            + ": give the path of an official YOLOv5 checkpoint such as yolov5n.pt "
            "(docs/pretrained.md), or null for random weights"
        )
    return path
