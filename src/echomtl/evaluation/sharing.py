"""The paper's question in order: does sharing the trunk cost a task anything, and how much of that
cost does each method recover?

1. **Cost of sharing**, per task, as a paired difference on the same resampled patients:
   detection ``isolated detector - fixed weights`` (the isolated-detector reference: the detector
   that no classification gradient reaches, ``Study.isolated_detector``), view classification
   ``view classifier alone - fixed weights``. Its reading (:func:`cost_reading`) follows its 95%
   interval: above 0, sharing costs the task; below 0, sharing helps it; otherwise no cost was
   measurable.
2. **Fraction recovered** by each shared-trunk method m (:func:`recovered_fraction`):
   ``(m - fixed) / (isolated - fixed)`` on every resample, with a percentile interval. It is
   computed only where the cost is measurable (reading ``costs``): a fraction of a cost that may
   be 0 has no meaning, and the text then says there was nothing measurable to recover.

3. **Δm** per shared-trunk run (:func:`delta_m`, Maninis et al. 2019, as LibMTL reports it): the
   mean over the two tasks of the run's relative change against each task's single-task run, in
   percent, with its percentile interval; read as above, below or not distinguishable from the
   single-task runs.

Every number comes from the bootstrap's per-resample values (``stats/bootstrap/*.values.npz``):
the runs of one comparison are scored on the same resampled patients, seeds averaged inside a
resample (``echomtl.evaluation.statistics``). Runs with different seed sets are scored again on
their common seeds, so that every difference pairs seed k with seed k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from echomtl.atomic import PathLike, write_json
from echomtl.evaluation.bootstrap import bootstrap_p_value
from echomtl.evaluation.statistics import (
    applicable_metrics,
    load_predictions,
    read_resample_values,
    resampling_units,
    verdict,
)
from echomtl.evaluation.vocabulary import TASK_METRICS, UNDECIDED

__all__ = [
    "COST_READINGS",
    "RECOVERY_READINGS",
    "DELTA_M_READINGS",
    "cost_reading",
    "recovered_fraction",
    "delta_m",
    "sharing",
]

#: The reading of a cost of sharing, by the verdict of ``isolated - shared``.
COST_READINGS = {"higher": "costs", "lower": "helps", UNDECIDED: "no measurable cost"}
#: The readings of a fraction recovered, by where its 95% interval lies.
RECOVERY_READINGS = (
    "recovers all of it",
    "recovers a measurable part",
    "recovers nothing measurable",
    "adds to it",
)


#: The reading of a run's Δm, by the verdict of Δm against 0.
DELTA_M_READINGS = {
    "higher": "above the single-task runs",
    "lower": "below the single-task runs",
    UNDECIDED: "not distinguishable from the single-task runs",
}


def _interval(values: np.ndarray) -> tuple[float, float, int]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return math.nan, math.nan, 0
    low, high = np.percentile(ok, [2.5, 97.5])
    return float(low), float(high), int(ok.size)


def difference(
    point_a: float, values_a: np.ndarray, point_b: float, values_b: np.ndarray
) -> dict[str, Any]:
    """``a - b`` with its 95% percentile interval, p-value and verdict (NaN-free or null)."""
    diffs = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    low, high, n = _interval(diffs)
    diff = float(point_a) - float(point_b)
    defined = n > 0 and not math.isnan(diff)
    return {
        "diff": diff if defined else None,
        "low": low if defined else None,
        "high": high if defined else None,
        "p": bootstrap_p_value(diffs) if defined else None,
        "n_valid": n,
        "verdict": verdict(diff, low, high) if defined else None,
    }


def cost_reading(cost: Mapping[str, Any]) -> str | None:
    """``costs``, ``helps`` or ``no measurable cost`` (:data:`COST_READINGS`) from the cost's
    verdict; None when the cost is undefined."""
    word = cost.get("verdict")
    return None if word is None else COST_READINGS[word]


def recovery_reading(low: float, high: float) -> str:
    """Where the fraction's interval lies: all of the cost (low >= 1), a measurable part
    (low > 0), an added cost (high < 0), else nothing measurable (:data:`RECOVERY_READINGS`)."""
    if low >= 1.0:
        return RECOVERY_READINGS[0]
    if low > 0.0:
        return RECOVERY_READINGS[1]
    if high < 0.0:
        return RECOVERY_READINGS[3]
    return RECOVERY_READINGS[2]


def recovered_fraction(
    method: tuple[float, np.ndarray],
    shared: tuple[float, np.ndarray],
    isolated: tuple[float, np.ndarray],
    reading: str | None,
) -> dict[str, Any] | None:
    """The fraction of the cost of sharing that ``method`` recovers, or None when the cost is
    not measurable (``reading`` other than ``costs``).

    Each argument is ``(point, values over resamples)``. The fraction is
    ``(method - shared) / (isolated - shared)`` on the point and on every resample whose cost is
    not 0; its interval is the percentile interval of those ratios.
    """
    if reading != COST_READINGS["higher"]:
        return None
    (pm, vm), (ps, vs), (pi, vi) = method, shared, isolated
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = (np.asarray(vm) - np.asarray(vs)) / (np.asarray(vi) - np.asarray(vs))
    low, high, n = _interval(ratios)
    point = (pm - ps) / (pi - ps)
    return {
        "point": float(point),
        "low": low,
        "high": high,
        "n_valid": n,
        "reading": recovery_reading(low, high),
    }


def delta_m(
    run: Mapping[str, tuple[float, np.ndarray]],
    single_task: Mapping[str, tuple[float, np.ndarray]],
) -> dict[str, Any]:
    """Δm in percent: ``100 * mean_t (run_t - single_t) / single_t`` over the task metrics of
    ``single_task`` (each ``metric -> (point, values over resamples)``; every metric here is
    higher-better, so no sign flips), on the point and on every resample, with a percentile
    interval and its reading (:data:`DELTA_M_READINGS`). The field's one-number summary of a
    multi-task model against its single-task baselines; it weighs the tasks equally."""
    with np.errstate(divide="ignore", invalid="ignore"):
        point = 100.0 * float(np.mean([(np.float64(run[t][0]) - b) / np.float64(b)
                                       for t, (b, _) in single_task.items()]))  # fmt: skip
        values = 100.0 * np.mean(
            [(np.asarray(run[t][1]) - np.asarray(v)) / np.asarray(v)
             for t, (_, v) in single_task.items()], axis=0,
        )  # fmt: skip
    low, high, n = _interval(values)
    defined = n > 0 and math.isfinite(point)
    word = verdict(point, low, high) if defined else None
    return {
        "point": point if defined else None,
        "low": low if defined else None,
        "high": high if defined else None,
        "n_valid": n,
        "verdict": word,
        "reading": DELTA_M_READINGS[word] if word else None,
    }


#: ``values(runs)`` -> ``{run: (point, values)}`` of those runs on one set of resamples
Values = Callable[[Sequence[str]], Mapping[str, tuple[Mapping[str, float], Mapping[str, Any]]]]


def sharing_summary(
    values: Values | Mapping[str, tuple[Mapping[str, float], Mapping[str, np.ndarray]]],
    isolated: Mapping[str, str],
    shared: str,
    methods: Sequence[str],
    metrics: Sequence[str] = TASK_METRICS,
) -> dict[str, Any]:
    """The cost of sharing and the fraction each method recovers, per task metric.

    ``values``: ``values(runs)`` gives the runs' ``(point, values)`` on resamples common to
    them (:class:`CommonValues`: the seeds they all ran), or one mapping for every run on the
    same resamples. ``isolated``: the single-task reference of each metric (``{"map50":
    "det_only", "view_accuracy": "view_only"}``); ``shared``: the fixed-weight multi-task run;
    ``methods``: the shared-trunk runs whose recovery is read. Each comparison uses the seeds its
    own runs have in common: the cost of sharing is not cut to a method's fewer seeds.
    """
    of = values if callable(values) else (lambda runs: values)
    out: dict[str, Any] = {}
    for metric in metrics:
        reference = isolated[metric]
        pair = of([reference, shared])
        ref_point, ref_values = pair[reference][0][metric], pair[reference][1][metric]
        s_point, s_values = pair[shared][0][metric], pair[shared][1][metric]
        cost = difference(ref_point, ref_values, s_point, s_values)
        reading = cost_reading(cost)
        per_method = {}
        for m in methods:
            trio = of([reference, shared, m])
            m_point, m_values = trio[m][0][metric], trio[m][1][metric]
            ts_point, ts_values = trio[shared][0][metric], trio[shared][1][metric]
            tr_point, tr_values = trio[reference][0][metric], trio[reference][1][metric]
            per_method[m] = {
                "value": float(m_point),
                "gain": difference(m_point, m_values, ts_point, ts_values),
                "fraction": recovered_fraction(
                    (m_point, m_values), (ts_point, ts_values), (tr_point, tr_values), reading
                ),
            }
        out[metric] = {
            "isolated": reference,
            "isolated_value": float(ref_point),
            "shared_value": float(s_point),
            "cost": {**cost, "reading": reading},
            "methods": per_method,
        }
    return out


class CommonValues:
    """``values(runs)``: the runs' bootstrap values on the resamples of the seeds they all ran.

    The bootstrap jobs' stored values serve when the runs hold the same images (the same seeds);
    otherwise each run is scored again on the common seeds (cached per run and seed set), so
    that a comparison pairs seed k with seed k on the same resampled patients.
    """

    def __init__(
        self,
        prediction_files: Mapping[str, Sequence[PathLike]],
        value_files: Mapping[str, PathLike],
        metrics: Sequence[str],
        n_resamples: int,
        seed: int,
    ) -> None:
        self.stored = {e: read_resample_values(f) for e, f in value_files.items()}
        self.loaded = {e: load_predictions(files) for e, files in prediction_files.items()}
        self.metrics, self.n_resamples, self.seed = list(metrics), n_resamples, seed
        self.settings = {"n_resamples": n_resamples, "seed": seed, "unit": "patient"}
        self.cache: dict[tuple[str, tuple[int, ...]], tuple[dict, dict]] = {}
        self.seeds_used: dict[tuple[str, ...], list[int]] = {}

    def seeds(self, runs: Sequence[str]) -> list[int]:
        common = sorted(set.intersection(*(set(self.loaded[r][2]) for r in runs)))
        if not common:
            raise ValueError(f"no seed common to {', '.join(runs)}")
        return common

    def __call__(self, runs: Sequence[str]) -> dict[str, tuple[dict, dict]]:
        from echomtl.evaluation.bootstrap import resample_values

        seeds = self.seeds(runs)
        self.seeds_used[tuple(runs)] = seeds
        out = {}
        for r in runs:
            stored = self.stored[r]
            if stored["seeds"] == seeds and stored["settings"] == self.settings:
                out[r] = (stored["point"], stored["values"])
                continue
            key = (r, tuple(seeds))
            if key not in self.cache:
                _, class_names, by_seed = self.loaded[r]
                images = (
                    by_seed[seeds[0]] if len(seeds) == 1
                    else [{**im, "name": f"s{s}/{im['name']}"} for s in seeds for im in by_seed[s]]
                )  # fmt: skip
                asked = applicable_metrics(self.metrics, images)
                self.cache[key] = resample_values(
                    images, class_names, self.n_resamples, self.seed, asked,
                    **resampling_units(images, "patient"),
                )  # fmt: skip
            out[r] = self.cache[key]
        names = {tuple(self._names(r, seeds)) for r in runs}
        if len(names) != 1:
            raise ValueError(f"{', '.join(runs)} were not evaluated on the same test images")
        return out

    def _names(self, run: str, seeds: Sequence[int]) -> list[str]:
        by_seed = self.loaded[run][2]
        if len(seeds) == 1:
            return [im["name"] for im in by_seed[seeds[0]]]
        return [f"s{s}/{im['name']}" for s in seeds for im in by_seed[s]]


def sharing(
    study: Any,
    prediction_files: Mapping[str, Sequence[PathLike]],
    value_files: Mapping[str, PathLike],
    out_json: PathLike,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The job: :func:`sharing_summary` of the study's runs, written to ``out_json``."""
    roles = study.roles
    view_only, shared = (study.members(roles[r])[0] for r in ("view_only", "fixed"))
    isolated = {"map50": study.isolated_detector, "view_accuracy": view_only}
    methods = [e for e in study.shared_trunk if e != shared]
    values = CommonValues(prediction_files, value_files, TASK_METRICS, n_resamples, seed)
    summary = sharing_summary(values, isolated, shared, methods)
    for part in summary.values():
        part["cost"]["seeds"] = values.seeds([part["isolated"], shared])
        for m, entry in part["methods"].items():
            entry["seeds"] = values.seeds([part["isolated"], shared, m])
    singles = list(dict.fromkeys(isolated.values()))
    changes = {}
    for run in [shared, *methods]:
        trio = values([*singles, run])
        baseline = {t: (trio[e][0][t], trio[e][1][t]) for t, e in isolated.items()}
        own = {t: (trio[run][0][t], trio[run][1][t]) for t in isolated}
        changes[run] = {**delta_m(own, baseline), "seeds": values.seeds([*singles, run])}
    result = {
        "shared": shared,
        "isolated": isolated,
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": 0.95,
        "difference": "isolated - shared (cost); method - shared (gain)",
        "metrics": summary,
        "delta_m": changes,
    }
    write_json(out_json, result)
    return result
