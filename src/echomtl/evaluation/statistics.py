"""Patient-level statistics of the evaluation: bootstrap intervals, paired comparisons, verdicts.

Resampling is done by ``echomtl.evaluation.bootstrap`` (percentile bootstrap over test images);
this module only decides what is resampled together and how a result is worded:

- several seeds of one experiment are pooled: the image lists of all seeds are concatenated, each
  image renamed ``s<seed>/<name>``, so one resampling unit is one (seed, image) prediction. The
  interval then reflects test-image sampling of the pooled predictions; seed-to-seed spread is
  reported separately (``echomtl.report.summaries.summarise_seeds``).
- a paired comparison pairs seed k of A with seed k of B, image by image (seeds present in both
  runs only), so both are scored on the same resampled images.
- :func:`verdict` reads an interval of a difference: entirely above 0 -> ``"higher"``, entirely
  below -> ``"lower"``, otherwise ``"not distinguishable at 95%"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echomtl.atomic import (
    PathLike,
    atomic_path,
    read_json,
    run_id_from_path,
    write_json,
)
from echomtl.evaluation.vocabulary import (
    FAMILY_LEVEL,
    STATISTICS_METRICS,
    UNDECIDED,
    VERDICTS,
    VIEW_METRICS,
)

__all__ = [
    "VERDICTS",
    "STATISTICS_METRICS",
    "verdict",
    "load_predictions",
    "bootstrap_experiment",
    "paired_experiment",
    "load_intervals",
    "load_paired",
    "holm",
    "adjusted_verdict",
    "applicable_metrics",
    "resampling_units",
]


def verdict(diff: float, low: float, high: float) -> str:
    """Word a paired difference ``a - b`` by its 95% interval ``[low, high]``.

    ``"higher"`` (a above b) when ``low > 0``, ``"lower"`` when ``high < 0``, otherwise
    ``"not distinguishable at 95%"``. NaN anywhere raises: an undefined comparison must not be
    worded at all.
    """
    values = (diff, low, high)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        raise ValueError(f"cannot word an undefined comparison (diff={diff}, [{low}, {high}])")
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is reversed")
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return UNDECIDED


def _seed_of(path: PathLike, index: int) -> int:
    try:
        return run_id_from_path(path)[1]
    except ValueError:
        return index


def _read_predictions(path: PathLike) -> dict:
    data = read_json(path)
    for key in ("class_names", "images"):
        if key not in data:
            raise ValueError(f"{path}: predictions JSON lacks {key!r}")
    return data


def load_predictions(
    files: Sequence[PathLike] | Mapping[int, PathLike],
) -> tuple[list[dict], list[str], dict[int, list[dict]]]:
    """Pool the predictions of several seeds of one experiment.

    Returns ``(images, class_names, by_seed)``: ``images`` is the concatenation over seeds (names
    prefixed ``s<seed>/`` when there is more than one seed), ``by_seed`` the per-seed lists
    unchanged. Seeds come from the ``seed<k>`` folder of each path (or the mapping's keys).
    """
    items = (
        sorted(files.items())
        if isinstance(files, Mapping)
        else sorted((_seed_of(p, i), p) for i, p in enumerate(files))
    )
    if not items:
        raise ValueError("no predictions files given")
    class_names: list[str] | None = None
    by_seed: dict[int, list[dict]] = {}
    for seed, path in items:
        data = _read_predictions(path)
        if class_names is None:
            class_names = list(data["class_names"])
        elif list(data["class_names"]) != class_names:
            raise ValueError(f"{path}: class names {data['class_names']} differ from {class_names}")
        if seed in by_seed:
            raise ValueError(f"{path}: second predictions file for seed {seed}")
        by_seed[seed] = list(data["images"])
    assert class_names is not None
    if len(by_seed) == 1:
        images = next(iter(by_seed.values()))
    else:
        images = [
            {**img, "name": f"s{seed}/{img['name']}"}
            for seed, imgs in by_seed.items()
            for img in imgs
        ]
    return images, class_names, by_seed


def patient_of(name: str) -> str:
    """The patient of a predicted image, from its file name (the reader's identity rule).

    A ``s<seed>/`` prefix (seeds pooled by ``load_predictions``) is ignored: the same patient in
    several seeds is one cluster.
    """
    from echomtl.data.export_reader import parse_identity

    return parse_identity(Path(name.split("/", 1)[-1]).stem)[0]


def resampling_units(images: Sequence[dict], unit: str) -> dict[str, list]:
    """Resampling keywords: patients as clusters and seeds as strata (``unit="patient"``), or
    plain images (``unit="image"``, the secondary image-level interval)."""
    if unit == "image":
        return {}
    if unit != "patient":
        raise ValueError(f"bootstrap unit must be 'patient' or 'image', got {unit!r}")
    names = [img["name"] for img in images]
    strata = [n.split("/", 1)[0] if "/" in n else "s" for n in names]
    return {"groups": [patient_of(n) for n in names], "strata": strata}


UNITS = {
    "patient": "patients resampled with all their images; metrics averaged over seeds per resample",
    "image": "test images resampled (seeds concatenated): too narrow for patient-level claims",
}


def _default_bootstrap() -> Callable:
    from echomtl.evaluation.bootstrap import bootstrap_metrics

    return bootstrap_metrics


def _default_paired() -> Callable:
    from echomtl.evaluation.bootstrap import paired_bootstrap

    return paired_bootstrap


_UNDEFINED = {"point": None, "mean": None, "low": None, "high": None, "se": None, "n_valid": 0}
_UNDEFINED_DIFF = {
    "diff": None, "mean": None, "low": None, "high": None, "se": None, "mdd": None, "p": None,
    "n_valid": 0,
}  # fmt: skip


def applicable_metrics(metrics: Sequence[str], images: Sequence[dict]) -> list[str]:
    """The metrics defined for these predictions: view metrics only if the model predicts views,
    detection metrics only if it predicts boxes (has a detector).

    (Asking the bootstrap for a view metric of a model without a view head would make it return
    NaN for every metric of the resample, detection included.)
    """
    has_views = any(img.get("view_pred") is not None for img in images)
    has_boxes = any(img.get("pred") is not None for img in images)
    return [
        m for m in metrics
        if (has_views if m in VIEW_METRICS else has_boxes)
    ]  # fmt: skip


def _clean_metric(entry: Mapping) -> dict:
    return {k: (float(v) if isinstance(v, int | float) else v) for k, v in entry.items()}


def bootstrap_experiment(
    experiment: str,
    prediction_files: Sequence[PathLike] | Mapping[int, PathLike],
    out_json: PathLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = STATISTICS_METRICS,
    bootstrap_fn: Callable | None = None,
    unit: str = "patient",
    values_out: PathLike | None = None,
) -> dict:
    """95% bootstrap intervals of one experiment's test metrics; writes JSON.

    ``values_out``: also write every resample's values (:func:`write_resample_values`), from
    which :func:`paired_experiment` reads a paired comparison without scoring again.

    ``unit``: ``patient`` (default: a cluster bootstrap over patients, seeds averaged inside each
    resample) or ``image``.

    Output: ``{"experiment", "seeds", "n_images", "n_resamples", "seed", "pooling",
    "metrics": {metric: {"point", "mean", "low", "high", "n_valid"}}}``; a metric undefined for
    the experiment (view accuracy of a detector alone) has null values.
    """
    images, class_names, by_seed = load_predictions(prediction_files)
    fn = bootstrap_fn or _default_bootstrap()
    asked = applicable_metrics(metrics, images)
    extra = {"keep_values": True} if values_out is not None else {}
    result = fn(
        images, class_names, n_resamples=n_resamples, seed=seed, metrics=asked,
        **resampling_units(images, unit), **extra,
    )  # fmt: skip
    if values_out is not None:
        write_resample_values(
            values_out,
            names=[img["name"] for img in images],
            seeds=sorted(by_seed),
            settings={"n_resamples": n_resamples, "seed": seed, "unit": unit},
            point={m: result[m]["point"] for m in asked},
            values={m: result[m].pop("values") for m in asked},
        )
    result = {**{m: _UNDEFINED for m in metrics if m not in asked}, **result}
    out = {
        "experiment": experiment,
        "seeds": sorted(by_seed),
        "n_images": len(images),
        "n_patients": len({patient_of(img["name"]) for img in images}),
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": 0.95,
        "unit": unit,
        "pooling": UNITS[unit],
        "metrics": {m: _clean_metric(v) for m, v in result.items()},
    }
    if out_json is not None:
        write_json(out_json, out)
    return out


def paired_experiment(
    reference: str,
    other: str,
    reference_files: Sequence[PathLike] | Mapping[int, PathLike],
    other_files: Sequence[PathLike] | Mapping[int, PathLike],
    out_json: PathLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = STATISTICS_METRICS,
    paired_fn: Callable | None = None,
    unit: str = "patient",
    values: tuple[PathLike, PathLike] | None = None,
) -> dict:
    """Paired bootstrap of ``reference - other`` on the same test images; writes JSON.

    ``unit``: ``patient`` (default: the same resampled patients for both runs, seeds averaged
    inside each resample) or ``image``. Each metric also gets ``mdd``, the minimum detectable
    difference (80% power at 5%).

    Seeds are matched (seed k with seed k); seeds present in only one run are left out (and
    listed). Output: ``{"reference", "other", "seeds", "n_images", "n_resamples", "seed",
    "metrics": {metric: {"diff", "mean", "low", "high", "n_valid", "verdict"}}}``, ``verdict``
    as :func:`verdict` from the reference's side (null where the metric is undefined).
    """
    _, class_a, seeds_a = load_predictions(reference_files)
    _, class_b, seeds_b = load_predictions(other_files)
    if class_a != class_b:
        raise ValueError(
            f"{reference} and {other} use different class names: {class_a} / {class_b}"
        )
    common = sorted(set(seeds_a) & set(seeds_b))
    if not common:
        raise ValueError(
            f"paired comparison {reference} vs {other}: no common seed "
            f"({sorted(seeds_a)} vs {sorted(seeds_b)})"
        )

    def pooled(by_seed: dict[int, list[dict]]) -> list[dict]:
        if len(common) == 1:
            return by_seed[common[0]]
        return [{**img, "name": f"s{s}/{img['name']}"} for s in common for img in by_seed[s]]

    fn = paired_fn or _default_paired()
    images_a, images_b = pooled(seeds_a), pooled(seeds_b)
    defined_b = applicable_metrics(metrics, images_b)
    asked = [m for m in applicable_metrics(metrics, images_a) if m in defined_b]
    settings = {"n_resamples": n_resamples, "seed": seed, "unit": unit}
    cached = None
    if values is not None and paired_fn is None and set(seeds_a) == set(seeds_b):
        cached = _paired_from_files(values, [img["name"] for img in images_a], settings, asked)
    if cached is not None:
        result, reuse = cached, "resample values of both runs' bootstrap jobs"
    else:
        result = fn(
            images_a, images_b, class_a, n_resamples=n_resamples, seed=seed, metrics=asked,
            **resampling_units(images_a, unit),
        )  # fmt: skip
        reuse = None
    result = {**{m: _UNDEFINED_DIFF for m in metrics if m not in asked}, **result}
    out_metrics = {}
    for m, entry in result.items():
        entry = _clean_metric(entry)
        values = [entry.get(k) for k in ("diff", "low", "high")]
        defined = all(v is not None and not math.isnan(float(v)) for v in values)
        entry["verdict"] = verdict(*[float(v) for v in values]) if defined else None
        out_metrics[m] = entry
    out = {
        "reference": reference,
        "other": other,
        "seeds": common,
        "seeds_left_out": sorted(set(seeds_a) ^ set(seeds_b)),
        "n_images": len(images_a),
        "n_patients": len({patient_of(img["name"]) for img in images_a}),
        "n_resamples": n_resamples,
        "seed": seed,
        "confidence": 0.95,
        "unit": unit,
        "pooling": UNITS[unit],
        "difference": "reference - other",
        "metrics": out_metrics,
        "computed_from": reuse or "both runs scored on every resample",
    }
    if out_json is not None:
        write_json(out_json, out)
    return out


def write_resample_values(
    path: PathLike,
    names: Sequence[str],
    seeds: Sequence[int],
    settings: Mapping[str, Any],
    point: Mapping[str, float],
    values: Mapping[str, Sequence[float]],
) -> None:
    """One run's bootstrap values (npz): image order, seeds, settings, point and per-resample
    values per metric; enough to pair it with another run on the same resamples."""
    metrics = list(point)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                names=np.asarray(list(names), dtype=str),
                seeds=np.asarray(list(seeds), dtype=np.int64),
                settings=np.asarray(json.dumps(dict(settings), sort_keys=True)),
                metrics=np.asarray(metrics, dtype=str),
                point=np.asarray([point[m] for m in metrics], dtype=np.float64),
                values=np.asarray([list(values[m]) for m in metrics], dtype=np.float64),
            )


def read_resample_values(path: PathLike) -> dict[str, Any]:
    """What :func:`write_resample_values` wrote."""
    with np.load(path, allow_pickle=False) as data:
        metrics = [str(m) for m in data["metrics"]]
        return {
            "names": [str(n) for n in data["names"]],
            "seeds": [int(s) for s in data["seeds"]],
            "settings": json.loads(str(data["settings"])),
            "point": dict(zip(metrics, data["point"].tolist(), strict=True)),
            "values": dict(zip(metrics, data["values"], strict=True)),
        }


def _paired_from_files(
    files: tuple[PathLike, PathLike],
    names: Sequence[str],
    settings: Mapping[str, Any],
    metrics: Sequence[str],
) -> dict[str, dict] | None:
    """The paired result from both runs' stored resample values, or None when they do not share
    the resamples (other images, order, settings or metrics): the caller then scores both."""
    from echomtl.evaluation.bootstrap import paired_from_values

    a, b = (read_resample_values(f) for f in files)
    for run in (a, b):
        if run["names"] != list(names) or run["settings"] != dict(settings):
            return None
        if not set(metrics) <= set(run["values"]):
            return None
    return paired_from_values(a["point"], a["values"], b["point"], b["values"], metrics)


def _nanify(entry: Mapping) -> dict:
    return {k: (math.nan if v is None and k != "verdict" else v) for k, v in entry.items()}


def load_intervals(files: Iterable[PathLike]) -> dict[str, dict[str, dict]]:
    """``{experiment: {metric: {"point", "mean", "low", "high", ...}}}`` from bootstrap JSONs."""
    out: dict[str, dict[str, dict]] = {}
    for path in files:
        data = read_json(path)
        exp = data["experiment"]
        if exp in out:
            raise ValueError(f"{path}: second interval file for {exp!r}")
        out[exp] = {m: _nanify(v) for m, v in data["metrics"].items()}
    return out


def holm(p_values: Mapping[str, float | None]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values of one family (step-down; monotone; at most 1).

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``;
    rejecting where the adjusted value is below the level keeps the family-wise error rate at
    that level. Undefined (None/NaN) p-values are not members of the family and stay NaN.
    """
    members = sorted(
        (float(p), key) for key, p in p_values.items() if p is not None and not math.isnan(p)
    )
    out = dict.fromkeys(p_values, math.nan)
    running = 0.0
    for rank, (p, key) in enumerate(members):
        running = max(running, min(1.0, (len(members) - rank) * p))
        out[key] = running
    return out


def adjusted_verdict(raw: str | None, p_holm: float, level: float = FAMILY_LEVEL) -> str | None:
    """The verdict after the family's adjustment: the interval's word when the adjusted p-value
    is below ``level``, else undecided (an undefined comparison stays undefined)."""
    if raw is None:
        return None
    return raw if p_holm < level else UNDECIDED


def load_paired(
    files: Iterable[PathLike],
    reference: str | None = None,
    same_detector: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """``{other: {metric: {"diff", "low", "high", "verdict", ...}}}`` from paired JSONs, with
    each metric's family adjusted (:func:`holm`).

    All files must share one reference (``reference`` when given). The family of a metric is
    every comparison of the reference with another experiment on that metric, counted once per
    distinct model: ``same_detector`` maps an experiment whose detector is by design the same as
    another's (the isolated controls) to that one, and its detection comparisons are left out of
    the family and take the other's adjusted result. ``verdict`` is then the adjusted verdict
    (:func:`adjusted_verdict`); ``verdict_unadjusted`` and ``p_holm`` are kept beside it.
    """
    out: dict[str, dict] = {}
    for path in files:
        data = read_json(path)
        ref = data["reference"]
        if reference is None:
            reference = ref
        if ref != reference:
            raise ValueError(f"{path}: reference {ref!r}, expected {reference!r}")
        other = data["other"]
        if other in out:
            raise ValueError(f"{path}: second paired file for {other!r}")
        out[other] = {m: _nanify(v) for m, v in data["metrics"].items()}
    _adjust_families(out, dict(same_detector or {}))
    return out


def _p_of(other: str, metric: str, entry: Mapping) -> float | None:
    """The comparison's p-value; a worded comparison without one cannot join its family."""
    p = entry.get("p")
    if entry.get("verdict") is not None and (p is None or math.isnan(p)):
        raise ValueError(
            f"paired comparison with {other!r}: {metric} has a verdict but no p-value (a file "
            "of an older version? rerun the rule paired_bootstrap)"
        )
    return p


def _adjust_families(paired: dict[str, dict], same_detector: Mapping[str, str]) -> None:
    """Add ``p_holm`` and the adjusted ``verdict`` to every entry (see :func:`load_paired`)."""
    metrics = sorted({m for entries in paired.values() for m in entries})
    for metric in metrics:
        duplicate = {} if metric in VIEW_METRICS else same_detector
        family = {
            other: _p_of(other, metric, entries[metric])
            for other, entries in paired.items()
            if metric in entries and not (other in duplicate and duplicate[other] in paired)
        }
        adjusted = holm(family)
        for other, entries in paired.items():
            if metric not in entries:
                continue
            entry = entries[metric]
            twin = duplicate.get(other)
            if twin is not None and twin in paired:
                entry["same_detector_as"] = twin
            p_holm = adjusted.get(other, adjusted.get(twin, math.nan) if twin else math.nan)
            entry["verdict_unadjusted"] = entry.get("verdict")
            entry["p_holm"] = p_holm
            entry["verdict"] = adjusted_verdict(entry.get("verdict"), p_holm)
