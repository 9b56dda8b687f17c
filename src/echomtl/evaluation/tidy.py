"""Every run's measurements in one tidy table: the evaluation stage's last product.

The tidy table has one row per measured value, columns ``experiment, group, seed, split, metric,
value`` (CSV: :data:`TIDY_COLUMNS`). Metric names:

- ``split`` = ``valid``/``test`` (from ``metrics_<split>.json``): ``map50``, ``map50_95``,
  ``precision``, ``recall``, ``f1``, ``best_conf``, ``ap50/<class>``, ``ap50_95/<class>``,
  ``n_gt/<class>``, ``n_images``, and when the model classifies views ``view_accuracy``,
  ``view_macro_f1``, ``view_n_evaluated``, ``view_n_missing`` (the names the bootstrap uses);
- ``split`` = ``train`` (from ``steps.csv`` and the Snakemake benchmark file):
  ``loss_det_initial``/``loss_det_final`` (mean over the first / last :data:`LOSS_WINDOW` logged
  steps: single steps are noisy), ``loss_det_change_pct`` (final vs initial, percent),
  same for ``loss_cls``; ``weight_det_initial``/``weight_det_final``, ``weight_cls_...``
  (first / last logged step); ``n_steps``; ``train_seconds`` (the benchmark column ``s``, wall
  clock, mean over its rows when Snakemake repeated the job; not ``cpu_time``, which Snakemake
  samples every 30 s and so misses up to the last 30 s of a job's CPU time); from ``epochs.csv``,
  what training cost as the training process measured it: ``seconds_per_step`` (wall seconds
  per optimizer step), ``peak_rss_mib`` and on CUDA ``cuda_peak_mib``;
- ``split`` = ``model``: ``n_parameters``.

Under cross-validation the test rows are the pooled out-of-fold evaluation, with per-fold values
as ``fold<f>/<metric>`` (``map50``, ..., ``view_accuracy``, ``view_macro_f1``, ``n_images``,
``n_patients``); the train rows come from each experiment's first fold run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from echomtl.atomic import PathLike, files_by_run, read_json, write_text
from echomtl.study import Study, as_table

__all__ = [
    "TIDY_COLUMNS", "LOSS_WINDOW", "benchmark_seconds", "collect_metrics", "read_tidy", "write_tidy"
]  # fmt: skip

TIDY_COLUMNS = ["experiment", "group", "seed", "split", "metric", "value"]
LOSS_WINDOW = 10
DETECTION_KEYS = ("map50", "map50_95", "precision", "recall", "f1", "best_conf")
CLASSIFICATION_KEYS = {
    "accuracy": "view_accuracy",
    "macro_f1": "view_macro_f1",
    "n_evaluated": "view_n_evaluated",
    "n_missing": "view_n_missing",
}


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _metric_rows(data: dict, path: PathLike) -> list[tuple[str, float]]:
    """``(metric, value)`` pairs of one ``metrics_<split>.json``."""
    try:
        det = data["detection"]
    except KeyError:
        raise ValueError(f"{path}: no 'detection' section") from None
    rows: list[tuple[str, float]] = [("n_images", _float(data.get("n_images")))]
    # a model without a detector (view_only) has detection null: no detection rows
    for key in DETECTION_KEYS if det is not None else ():
        if key in det:
            rows.append((key, _float(det[key])))
        elif key in ("map50", "map50_95"):
            raise ValueError(f"{path}: detection.{key} missing")
    for cls, entry in ((det or {}).get("per_class") or {}).items():
        for key in ("ap50", "ap50_95", "n_gt"):
            if key in entry:
                rows.append((f"{key}/{cls}", _float(entry[key])))
    cls_part = data.get("classification")
    if cls_part is not None:
        for key, name in CLASSIFICATION_KEYS.items():
            if key in cls_part:
                rows.append((name, _float(cls_part[key])))
    for entry in data.get("folds") or ():  # pooled cross-validation: per-fold values
        fold = int(entry["fold"])
        rows += [
            (f"fold{fold}/{key}", _float(value))
            for key, value in entry.items()
            if key not in ("fold", "experiment")
        ]
    return rows


def _steps_rows(path: PathLike, window: int = LOSS_WINDOW) -> list[tuple[str, float]]:
    """Initial/final losses and weights of one ``steps.csv``."""
    steps = pd.read_csv(path)
    need = {"step", "loss_det", "loss_cls", "weight_det", "weight_cls"}
    missing = need - set(steps.columns)
    if missing:
        raise ValueError(f"{path}: steps.csv lacks columns {sorted(missing)}")
    if steps.empty:
        raise ValueError(f"{path}: steps.csv has no rows (did training run?)")
    steps = steps.sort_values(["step"], kind="stable")
    k = max(1, min(window, len(steps) // 2 or 1))
    rows: list[tuple[str, float]] = [("n_steps", float(len(steps)))]
    for task in ("det", "cls"):
        col = steps[f"loss_{task}"].astype(float)
        first, last = float(col.iloc[:k].mean()), float(col.iloc[-k:].mean())
        change = 100.0 * (last - first) / first if first != 0 else math.nan
        rows += [
            (f"loss_{task}_initial", first),
            (f"loss_{task}_final", last),
            (f"loss_{task}_change_pct", change),
            (f"weight_{task}_initial", float(steps[f"weight_{task}"].iloc[0])),
            (f"weight_{task}_final", float(steps[f"weight_{task}"].iloc[-1])),
        ]
    return rows


def _cost_rows(path: PathLike) -> list[tuple[str, float]]:
    """What one run's training cost (``epochs.csv``, columns of
    :data:`echomtl.training.trainer.EPOCH_COST`): wall seconds per optimizer step over the
    epochs its processes timed, the peak resident set size and, on CUDA, the peak allocated
    memory (MiB; the maximum over epochs, since a resumed run restarts the process). A run
    trained before these columns existed has no cost rows: its cost was not measured."""
    epochs = pd.read_csv(path)
    if not {"seconds", "optimizer_steps", "peak_rss_mib"} <= set(epochs.columns):
        return []
    # epochs a process ran before it recorded its cost (a run resumed from an older checkpoint)
    # have empty cells: their seconds must not count against the steps of the others
    epochs = epochs.dropna(subset=["optimizer_steps", "peak_rss_mib"])
    steps = float(epochs["optimizer_steps"].sum())
    if steps <= 0:
        raise ValueError(f"{path}: epochs.csv counts no optimizer step (did training run?)")
    rows = [
        ("seconds_per_step", float(epochs["seconds"].sum()) / steps),
        ("peak_rss_mib", float(epochs["peak_rss_mib"].max())),
    ]
    cuda = epochs["cuda_peak_mib"].dropna() if "cuda_peak_mib" in epochs.columns else []
    if len(cuda):
        rows.append(("cuda_peak_mib", float(cuda.max())))
    return rows


def benchmark_seconds(path: PathLike) -> float:
    """A job's wall seconds (column ``s``), the mean over repeats."""
    bench = pd.read_csv(path, sep="\t")
    if "s" not in bench.columns or bench.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column or no rows)")
    return float(bench["s"].astype(float).mean())


def _param_counts(param_counts: Mapping[str, int] | PathLike | None) -> dict[str, int]:
    if param_counts is None:
        return {}
    if isinstance(param_counts, Mapping):
        return {str(k): int(v) for k, v in param_counts.items()}
    data = read_json(param_counts)
    if not isinstance(data, dict):
        raise ValueError(f"{param_counts}: expected a JSON object {{experiment: n_parameters}}")
    return {str(k): int(v) for k, v in data.items()}


def collect_metrics(
    metric_files: Iterable[PathLike],
    experiments: Study | pd.DataFrame | PathLike,
    steps_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike] = (),
    benchmark_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike] = (),
    epochs_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike] = (),
    param_counts: Mapping[str, int] | PathLike | None = None,
    out_csv: PathLike | None = None,
) -> pd.DataFrame:
    """Collect every run's measurements into the tidy long table (see module docstring).

    Args:
        metric_files: ``metrics_<split>.json`` files (experiment, seed and split are read from
            the JSON itself).
        experiments: the experiments table (frame or TSV path); gives each experiment's group.
        steps_files: ``steps.csv`` per run, as paths following ``.../<experiment>/seed<k>/`` or
            a ``{(experiment, seed): path}`` mapping.
        benchmark_files: Snakemake benchmark TSVs of the training jobs (same two forms).
        epochs_files: ``epochs.csv`` per run (same two forms): what training cost.
        param_counts: ``{experiment: n_parameters}`` or a JSON file holding it; a metrics JSON
            with a top-level ``n_parameters`` is used too.
        out_csv: where to write the table (atomically); None: only return it.
    """
    table = as_table(experiments)
    rows: list[tuple] = []
    seen: set[tuple[str, int, str]] = set()
    params = _param_counts(param_counts)

    def group_of(exp: str, origin: object) -> str:
        if exp not in table.index:
            raise ValueError(f"{origin}: experiment {exp!r} is not in the experiments table")
        return str(table.at[exp, "group"])

    for path in metric_files:
        data = read_json(path)
        try:
            exp, seed, split = str(data["experiment"]), int(data["seed"]), str(data["split"])
        except KeyError as exc:
            raise ValueError(f"{path}: metrics JSON lacks {exc}") from None
        if (exp, seed, split) in seen:
            raise ValueError(f"{path}: a second metrics file for {exp} seed {seed} {split}")
        seen.add((exp, seed, split))
        group = group_of(exp, path)
        rows += [(exp, group, seed, split, m, v) for m, v in _metric_rows(data, path)]
        if "n_parameters" in data and exp not in params:
            params[exp] = int(data["n_parameters"])
    if not rows:
        raise ValueError("collect_metrics: no metrics files given")
    run_seeds: dict[str, set[int]] = {}
    for exp, seed, _split in seen:
        run_seeds.setdefault(exp, set()).add(seed)
    for (exp, seed), path in sorted(files_by_run(steps_files).items()):
        group = group_of(exp, path)
        rows += [(exp, group, seed, "train", m, v) for m, v in _steps_rows(path)]
    for (exp, seed), path in sorted(files_by_run(benchmark_files).items()):
        group = group_of(exp, path)
        rows.append((exp, group, seed, "train", "train_seconds", benchmark_seconds(path)))
    for (exp, seed), path in sorted(files_by_run(epochs_files).items()):
        group = group_of(exp, path)
        rows += [(exp, group, seed, "train", m, v) for m, v in _cost_rows(path)]
    for exp, n in sorted(params.items()):
        if exp not in run_seeds:
            continue  # a count for an experiment this study did not run
        for seed in sorted(run_seeds[exp]):
            rows.append(
                (exp, group_of(exp, "param_counts"), seed, "model", "n_parameters", float(n))
            )
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    order = {e: i for i, e in enumerate(table.index)}
    tidy = tidy.sort_values(
        ["experiment", "seed", "split", "metric"],
        key=lambda s: s.map(order) if s.name == "experiment" else s,
        kind="stable",
    ).reset_index(drop=True)
    if out_csv is not None:
        write_tidy(tidy, out_csv)
    return tidy


def write_tidy(tidy: pd.DataFrame, out_csv: PathLike) -> Path:
    """Write the tidy table (CSV, atomically, values with full precision)."""
    return write_text(out_csv, tidy[TIDY_COLUMNS].to_csv(index=False, float_format="%.10g"))


def read_tidy(path: PathLike) -> pd.DataFrame:
    """Read a tidy table written by :func:`write_tidy`."""
    tidy = pd.read_csv(path, dtype={"experiment": str, "group": str, "split": str, "metric": str})
    missing = [c for c in TIDY_COLUMNS if c not in tidy.columns]
    if missing:
        raise ValueError(f"{path}: not a tidy results table (missing {missing})")
    tidy["seed"] = tidy["seed"].astype(int)
    tidy["value"] = tidy["value"].astype(float)
    return tidy
