"""Bootstrap confidence intervals over test images (single run and paired comparison).

Resampling unit: the test image (with replacement, ``n`` draws from ``n`` images), or, when
``groups`` is given, the cluster (patient): ``k`` draws with replacement from the ``k`` patients,
each drawn patient bringing all its images. Images of one patient (and one video) are strongly
correlated, so only the cluster bootstrap gives intervals for patient-level claims; the image
bootstrap's are too narrow whenever the correlation is positive. Every resample
is scored with the same code as the point estimate; a resampled image that appears twice is
evaluated as two distinct images (the detection metrics identify images by list position).
Intervals are percentile intervals (2.5th and 97.5th percentiles for 95%). A resample on which a
metric is undefined (e.g. no labelled view, or no GT box of any class) gives NaN; NaNs are left
out of the mean and the interval, and ``n_valid`` says how many resamples remained.
Determinism: the resample indices come from ``numpy.random.default_rng(seed)`` only, so a seed
gives the same result on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from echomtl.evaluation.detection_metrics import (
    CocoResampler,
    precision_recall_f1_prepared,
    prepare_images,
)

__all__ = [
    "MDD_FACTOR",
    "bootstrap_metrics",
    "paired_bootstrap",
    "paired_from_values",
    "resample_values",
    "SUPPORTED_METRICS",
]

_COCO = ("map50", "map50_95")
_PRF = ("precision", "recall", "f1")
_VIEW = ("view_accuracy", "view_macro_f1")
SUPPORTED_METRICS = _COCO + _PRF + _VIEW
DEFAULT_METRICS = ("map50", "map50_95", "view_accuracy")


def _view_scores(t: np.ndarray, p: np.ndarray, want: Sequence[str]) -> dict[str, float]:
    """View accuracy / macro-F1 (classes present in true or pred) over labelled images."""
    keep = t != -1
    t, p = t[keep], p[keep]
    out: dict[str, float] = {}
    if t.size == 0 or np.any(p < 0):  # nothing labelled, or the model has no view head
        return {m: math.nan for m in want if m in _VIEW}
    if "view_accuracy" in want:
        out["view_accuracy"] = float(np.mean(t == p))
    if "view_macro_f1" in want:
        k = int(max(t.max(), p.max())) + 1
        cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        support = cm.sum(axis=0) + cm.sum(axis=1)
        present = support > 0
        out["view_macro_f1"] = float(np.mean(2 * np.diag(cm)[present] / support[present]))
    return out


def _make_scorer(
    images: Sequence[dict], class_names: Sequence[str], metrics: Sequence[str]
) -> Callable[[np.ndarray], dict[str, float]]:
    """A function from resample indices to ``{metric: value}`` (inputs converted once)."""
    unknown = [m for m in metrics if m not in SUPPORTED_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; supported: {list(SUPPORTED_METRICS)}")
    if len(images) == 0:
        raise ValueError("cannot bootstrap an empty image list")
    nc = len(class_names)
    need_det = any(m in _COCO + _PRF for m in metrics)
    prepared = prepare_images(images, nc) if need_det else []
    coco = CocoResampler(prepared, nc) if any(m in _COCO for m in metrics) else None
    view_true = np.asarray([img.get("view_true", -1) for img in images], dtype=np.int64)
    view_pred = np.asarray(
        [-1 if img.get("view_pred") is None else img["view_pred"] for img in images],
        dtype=np.int64,
    )

    def score(idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        if coco is not None:
            out["map50"], out["map50_95"] = coco.map(idx)
        if any(m in _PRF for m in metrics):
            out.update(precision_recall_f1_prepared([prepared[i] for i in idx], nc))
        if any(m in _VIEW for m in metrics):
            out.update(_view_scores(view_true[idx], view_pred[idx], metrics))
        return {m: float(out[m]) for m in metrics}

    return score


#: Minimum detectable difference of a paired comparison, in bootstrap standard errors: a true
#: difference of this size is found with 80% power by a two-sided test at 5% (1.96 + 0.84).
MDD_FACTOR = 2.8


def _per_stratum(
    score: Callable[[np.ndarray], dict[str, float]], strata: Sequence | None, metrics: Sequence[str]
) -> Callable[[np.ndarray], dict[str, float]]:
    """With ``strata`` (one label per image, e.g. the seed), score each stratum's share of the
    resample on its own and average the metrics over strata (seeds averaged inside a resample)."""
    if strata is None:
        return score
    labels = np.asarray(strata)
    values = list(dict.fromkeys(labels.tolist()))

    def averaged(idx: np.ndarray) -> dict[str, float]:
        drawn = labels[idx]
        rows = [score(idx[drawn == v]) for v in values if np.any(drawn == v)]
        if not rows:
            return dict.fromkeys(metrics, math.nan)
        with np.errstate(all="ignore"):
            return {m: float(np.nanmean([r[m] for r in rows])) for m in metrics}

    return averaged


def _resample_indices(
    n: int, n_resamples: int, seed: int, groups: Sequence | None = None
) -> list[np.ndarray]:
    """Image indices of each resample: ``n`` images with replacement, or whole clusters.

    With ``groups`` (one label per image), each resample draws as many clusters as there are,
    with replacement, and takes every image of each drawn cluster (so resamples vary in size).
    """
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    rng = np.random.default_rng(seed)
    if groups is None:
        return list(rng.integers(0, n, size=(n_resamples, n)))
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} labels for {n} images")
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    draws = rng.integers(0, len(members), size=(n_resamples, len(members)))
    return [np.concatenate([members[c] for c in row]) for row in draws]


def _summary(values: np.ndarray, confidence: float) -> dict:
    """Mean and percentile interval over the finite values."""
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "se": math.nan, "n_valid": 0}
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return {
        "mean": float(ok.mean()),
        "low": float(low),
        "high": float(high),
        "se": float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
        "n_valid": int(ok.size),
    }


def bootstrap_metrics(
    images: Sequence[dict],
    class_names: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    keep_values: bool = False,
    groups: Sequence | None = None,
    strata: Sequence | None = None,
) -> dict[str, dict]:
    """Percentile bootstrap interval of each metric over resampled test images.

    Args:
        images: predictions-JSON image dicts (``gt``, ``pred``, ``view_true``, ``view_pred``).
        metrics: any of ``SUPPORTED_METRICS``: ``map50``, ``map50_95`` (COCO, as ``coco_map``),
            ``precision``, ``recall``, ``f1`` (as ``precision_recall_f1``, threshold re-chosen
            on every resample), ``view_accuracy``, ``view_macro_f1``.
        keep_values: also return the per-resample values (list, NaN where undefined).
        groups: one cluster label per image (patient): resample clusters, not images.
        strata: one label per image (seed): each resample is scored per stratum and averaged.

    Returns:
        ``{metric: {"point", "mean", "low", "high", "se", "n_valid"[, "values"]}}``: ``point``
        is the metric on the original image set, ``mean`` and ``se`` the mean and standard
        deviation over resamples.
    """
    point, values = resample_values(images, class_names, n_resamples, seed, metrics, groups, strata)
    out: dict[str, dict] = {}
    for m in metrics:
        out[m] = {"point": point[m], **_summary(values[m], confidence)}
        if keep_values:
            out[m]["values"] = values[m].tolist()
    return out


def resample_values(
    images: Sequence[dict],
    class_names: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    groups: Sequence | None = None,
    strata: Sequence | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(point, values)``: each metric on the whole set and on every resample (NaN where
    undefined). The resamples depend only on the image order, ``groups`` and ``seed``, so two
    runs on the same images in the same order share them: a paired comparison can then be read
    off both runs' values (:func:`paired_from_values`) without scoring either again."""
    score = _per_stratum(_make_scorer(images, class_names, metrics), strata, metrics)
    idx = _resample_indices(len(images), n_resamples, seed, groups)
    point = score(np.arange(len(images)))
    rows = [score(r) for r in idx]
    return point, {m: np.array([r[m] for r in rows], dtype=np.float64) for m in metrics}


def paired_from_values(
    point_a: dict[str, float],
    values_a: dict[str, np.ndarray],
    point_b: dict[str, float],
    values_b: dict[str, np.ndarray],
    metrics: Sequence[str],
    confidence: float = 0.95,
) -> dict[str, dict]:
    """The result of :func:`paired_bootstrap` from two runs' values on the same resamples."""
    out: dict[str, dict] = {}
    for m in metrics:
        diffs = np.asarray(values_a[m]) - np.asarray(values_b[m])
        summary = _summary(diffs, confidence)
        out[m] = {
            "diff": point_a[m] - point_b[m],
            **summary,
            "mdd": MDD_FACTOR * summary["se"],
            "p": bootstrap_p_value(diffs),
        }
    return out


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0", from its resampled values.

    ``2 * min(share <= 0, share >= 0)`` with the ``(count + 1) / (n + 1)`` correction, so it is
    never 0 (the smallest attainable is ``2 / (n + 1)``: about 0.002 at 1000 resamples) and is
    below 0.05 about when the 95% percentile interval excludes 0. NaN without finite values.
    It exists for the multiplicity adjustment (``echomtl.evaluation.statistics.holm``).
    """
    ok = np.asarray(diffs, dtype=np.float64)
    ok = ok[~np.isnan(ok)]
    if ok.size == 0:
        return math.nan
    n = ok.size
    below = (np.count_nonzero(ok <= 0) + 1) / (n + 1)
    above = (np.count_nonzero(ok >= 0) + 1) / (n + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def _align(images_a: Sequence[dict], images_b: Sequence[dict]) -> list[dict]:
    """``images_b`` reordered to the order of ``images_a`` by name; ValueError if they differ."""
    names_a = [img["name"] for img in images_a]
    names_b = [img["name"] for img in images_b]
    for label, names in (("a", names_a), ("b", names_b)):
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})[:5]
            raise ValueError(f"paired_bootstrap: duplicate image names in images_{label}: {dup}")
    if set(names_a) != set(names_b):
        only_a = sorted(set(names_a) - set(names_b))[:5]
        only_b = sorted(set(names_b) - set(names_a))[:5]
        raise ValueError(
            "paired_bootstrap: the two runs were evaluated on different images "
            f"({len(names_a)} vs {len(names_b)}; only in a: {only_a}; only in b: {only_b})"
        )
    pos = {name: i for i, name in enumerate(names_b)}
    return [images_b[pos[name]] for name in names_a]


def paired_bootstrap(
    images_a: Sequence[dict],
    images_b: Sequence[dict],
    class_names: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    groups: Sequence | None = None,
    strata: Sequence | None = None,
) -> dict[str, dict]:
    """Bootstrap interval of the difference ``a - b`` of each metric, paired by image.

    Both runs are scored on the SAME resampled images (images matched by ``name``; ``images_b``
    is reordered to ``images_a``'s order, and differing image sets raise ValueError), so the
    interval reflects the model difference, not the test-set sampling twice.

    ``groups`` (one cluster label per image of ``images_a``): resample clusters, the same ones
    for both runs; ``strata`` (one label per image of ``images_a``, e.g. the seed): metrics are
    averaged over strata inside each resample.

    Returns:
        ``{metric: {"diff", "mean", "low", "high", "se", "mdd", "n_valid"}}``: ``diff`` =
        metric(a) - metric(b) on the original set, ``mean``/``low``/``high``/``se`` over the
        resampled differences, ``mdd`` = ``MDD_FACTOR * se``, the smallest true difference this
        comparison would detect with 80% power (so "not distinguishable" says what could have
        been seen).
    """
    images_b = _align(images_a, images_b)
    point_a, values_a = resample_values(
        images_a, class_names, n_resamples, seed, metrics, groups, strata
    )
    point_b, values_b = resample_values(
        images_b, class_names, n_resamples, seed, metrics, groups, strata
    )
    return paired_from_values(point_a, values_a, point_b, values_b, metrics, confidence)
