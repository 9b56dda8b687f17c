"""Summaries the report computes once from the workflow's files, for the tables and the text
alike: seed means of the tidy table, the gradient diagnostics per run and per configuration,
GradNorm's weights per training phase, and the data audits."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from echomtl.atomic import PathLike, files_by_run, read_json

__all__ = [
    "summarise_seeds",
    "diagnostics_summary",
    "diagnostics_by_configuration",
    "load_audit",
    "PHASES",
    "weight_phases",
]


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
    for (exp, seed), path in sorted(files_by_run(diagnostics_files).items()):
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
#: "Overall" is every step: GradNorm's mean detection weight is its mean detection step size
#: against fixed weights' (the renormalisation's effect the paper states).
PHASES = (
    ("Initial", 0.0, 0.0),
    ("Early", 0.0, 0.1),
    ("Mid", 0.45, 0.55),
    ("Final", 0.9, 1.0),
    ("Overall", 0.0, 1.0),
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
    runs = files_by_run(steps_files)
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
