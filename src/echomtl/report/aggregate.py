"""Aggregation of run outputs into one tidy table, and summaries of the training records.

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
  samples every 30 s and so misses up to the last 30 s of a job's CPU time);
- ``split`` = ``model``: ``n_parameters``.

Under cross-validation the test rows are the pooled out-of-fold evaluation, with per-fold values
as ``fold<f>/<metric>`` (``map50``, ..., ``view_accuracy``, ``view_macro_f1``, ``n_images``,
``n_patients``); the train rows come from each experiment's first fold run."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echomtl.atomic import PathLike, read_json, run_id_from_path, write_text
from echomtl.study import Study, as_table

__all__ = [
    "diagnostics_by_configuration",
    "summarise_seeds",
    "TIDY_COLUMNS",
    "LOSS_WINDOW",
    "collect_metrics",
    "read_tidy",
    "write_tidy",
    "diagnostics_summary",
    "load_audit",
    "PHASES",
    "weight_phases",
]

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
    for key in DETECTION_KEYS:
        if key in det:
            rows.append((key, _float(det[key])))
        elif key in ("map50", "map50_95"):
            raise ValueError(f"{path}: detection.{key} missing")
    for cls, entry in (det.get("per_class") or {}).items():
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


def _benchmark_seconds(path: PathLike) -> float:
    """A job's wall seconds (column ``s``), the mean over repeats."""
    bench = pd.read_csv(path, sep="\t")
    if "s" not in bench.columns or bench.empty:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column or no rows)")
    return float(bench["s"].astype(float).mean())


def _by_run(files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike]) -> dict:
    if isinstance(files, Mapping):
        return {(str(e), int(s)): Path(p) for (e, s), p in files.items()}
    out: dict[tuple[str, int], Path] = {}
    for p in files:
        key = run_id_from_path(p)
        if key in out:
            raise ValueError(f"two files for run {key}: {out[key]} and {p}")
        out[key] = Path(p)
    return out


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
    for (exp, seed), path in sorted(_by_run(steps_files).items()):
        group = group_of(exp, path)
        rows += [(exp, group, seed, "train", m, v) for m, v in _steps_rows(path)]
    for (exp, seed), path in sorted(_by_run(benchmark_files).items()):
        group = group_of(exp, path)
        rows.append((exp, group, seed, "train", "train_seconds", _benchmark_seconds(path)))
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


def diagnostics_summary(
    diagnostics_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
) -> pd.DataFrame:
    """Per run and scope: how often and how strongly the two task gradients conflict.

    Columns: ``experiment, seed, scope, n, median_cosine, mean_cosine, frac_negative,
    median_log10_norm_ratio`` (log10 of the UNWEIGHTED ``norm_det / norm_cls``: how steep each
    loss is), ``median_log10_wnorm_ratio`` (log10 of ``wnorm_det / wnorm_cls``: who moves the
    trunk), ``median_share_det`` (detection's share of the applied update), ``median_gms``,
    ``n_null`` and ``median_null_cosine`` (cosine of two half-batch detection gradients on the
    same steps: what no conflict looks like). Runs whose file has no rows (no shared trunk) are
    left out.
    """
    rows = []
    for (exp, seed), path in sorted(_by_run(diagnostics_files).items()):
        diag = pd.read_csv(path)
        need = {"scope", "norm_det", "norm_cls", "cosine", "wnorm_det", "wnorm_cls", "share_det",
                "null_cosine"}  # fmt: skip
        if not need <= set(diag.columns):
            raise ValueError(f"{path}: diagnostics.csv lacks {sorted(need - set(diag.columns))}")
        for scope, part in diag.groupby("scope", sort=True):
            cos = part["cosine"].astype(float)
            cos = cos[np.isfinite(cos)]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.log10(part["norm_det"].astype(float) / part["norm_cls"].astype(float))
                wratio = np.log10(part["wnorm_det"].astype(float) / part["wnorm_cls"].astype(float))
            ratio = ratio[np.isfinite(ratio)]
            wratio = wratio[np.isfinite(wratio)]
            share = part["share_det"].astype(float)
            share = share[np.isfinite(share)]
            null = part["null_cosine"].astype(float)
            null = null[np.isfinite(null)]
            gms = part["gms"].astype(float) if "gms" in part else pd.Series(dtype=float)
            rows.append(
                {
                    "experiment": exp,
                    "seed": seed,
                    "scope": str(scope),
                    "n": int(len(cos)),
                    "median_cosine": float(cos.median()) if len(cos) else math.nan,
                    "mean_cosine": float(cos.mean()) if len(cos) else math.nan,
                    "frac_negative": float((cos < 0).mean()) if len(cos) else math.nan,
                    "median_log10_norm_ratio": float(ratio.median()) if len(ratio) else math.nan,
                    "median_log10_wnorm_ratio": float(wratio.median()) if len(wratio) else math.nan,
                    "median_share_det": float(share.median()) if len(share) else math.nan,
                    "median_gms": float(gms.median()) if len(gms) else math.nan,
                    "n_null": int(len(null)),
                    "median_null_cosine": float(null.median()) if len(null) else math.nan,
                }
            )
    frame = pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "seed",
            "scope",
            "n",
            "median_cosine",
            "mean_cosine",
            "frac_negative",
            "median_log10_norm_ratio",
            "median_log10_wnorm_ratio",
            "median_share_det",
            "median_gms",
            "n_null",
            "median_null_cosine",
        ],
    )
    return frame


def diagnostics_by_configuration(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """:func:`diagnostics_summary` averaged over seeds, per ``(experiment, scope)``: the means of
    the per-run medians and shares, and the steps summed (the tables and the text read this)."""
    return diagnostics.groupby(["experiment", "scope"], sort=False).agg(
        median_cosine=("median_cosine", "mean"),
        frac_negative=("frac_negative", "mean"),
        n=("n", "sum"),
        ratio=("median_log10_norm_ratio", "mean"),
        wratio=("median_log10_wnorm_ratio", "mean"),
        share=("median_share_det", "mean"),
        null=("median_null_cosine", "mean"),
    )


AUDIT_KEYS = ("class_names", "view_names", "splits", "totals", "counts", "leakage", "view_missing")


def load_audit(path: PathLike) -> dict:
    """Read a data-audit ``audit.json`` (``echomtl.data.audit``), checking the keys we use."""
    audit = read_json(path)
    missing = [k for k in AUDIT_KEYS if k not in audit]
    if missing:
        raise ValueError(f"{path}: audit.json lacks {missing}")
    return audit


#: training phases for the weight-evolution table, as fractions of the logged steps:
#: (name, start, end); "Initial" is the first logged step alone, the others are means over
#: the steps whose rank r satisfies start <= r / n_steps < end (end 1.0 includes the last).
PHASES = (
    ("Initial", 0.0, 0.0),
    ("Early", 0.0, 0.1),
    ("Mid", 0.45, 0.55),
    ("Final", 0.9, 1.0),
)


def weight_phases(
    steps_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    phases: tuple[tuple[str, float, float], ...] = PHASES,
) -> pd.DataFrame:
    """Task weights and losses per training phase (see :data:`PHASES`), averaged over seeds.

    Columns: ``phase, start, end, first_step, last_step, weight_det, weight_cls, ratio``
    (``weight_det / weight_cls``), ``loss_det, loss_cls, n_seeds``.
    """
    per_seed = []
    runs = _by_run(steps_files)
    if not runs:
        raise ValueError("weight_phases: no steps.csv given (is the reference experiment run?)")
    for (_exp, _seed), path in sorted(runs.items()):
        steps = pd.read_csv(path).sort_values("step", kind="stable").reset_index(drop=True)
        n = len(steps)
        if n == 0:
            raise ValueError(f"{path}: steps.csv has no rows")
        rank = np.arange(n) / n
        for name, start, end in phases:
            if end <= start:
                part = steps.iloc[[0]]
            else:
                mask = (rank >= start) & ((rank < end) | (end >= 1.0))
                part = steps[mask] if mask.any() else steps.iloc[[int(start * n)]]
            per_seed.append(
                {
                    "phase": name,
                    "start": start,
                    "end": end,
                    "first_step": int(part["step"].iloc[0]),
                    "last_step": int(part["step"].iloc[-1]),
                    "weight_det": float(part["weight_det"].mean()),
                    "weight_cls": float(part["weight_cls"].mean()),
                    "loss_det": float(part["loss_det"].mean()),
                    "loss_cls": float(part["loss_cls"].mean()),
                }
            )
    frame = pd.DataFrame(per_seed)
    out = (
        frame.groupby(["phase", "start", "end"], sort=False)
        .agg(
            first_step=("first_step", "min"),
            last_step=("last_step", "max"),
            weight_det=("weight_det", "mean"),
            weight_cls=("weight_cls", "mean"),
            loss_det=("loss_det", "mean"),
            loss_cls=("loss_cls", "mean"),
            n_seeds=("weight_det", "size"),
        )
        .reset_index()
    )
    out["ratio"] = out["weight_det"] / out["weight_cls"]
    return out


def summarise_seeds(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds of every (experiment, split, metric).

    Columns: ``experiment, group, split, metric, mean, std, n_seeds, one_seed``. With one seed
    ``std`` is NaN and ``one_seed`` True, so that text and tables say "one seed" instead of
    printing a spread of 0. NaN values (metric undefined on a run) are not counted.
    """
    frame = tidy.copy()
    frame["value"] = frame["value"].astype(float)
    frame = frame[np.isfinite(frame["value"])]
    grouped = frame.groupby(["experiment", "group", "split", "metric"], sort=False)["value"]
    out = grouped.agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else math.nan, n_seeds="count"
    ).reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    out["one_seed"] = out["n_seeds"] == 1
    return out
