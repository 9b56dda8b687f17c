"""Figures of the paper: one function per figure, each writing ``<out_stem>.pdf`` and ``.png``.

Conventions: the Agg backend (no display, no network), fixed fonts and sizes, colours fixed per
experiment by its row in the experiments table, PDF metadata without a creation date (so a
figure is byte-identical when its inputs are). Functions return the two paths written.
Inputs that the study may legitimately lack (no torchjd method, one seed) are handled; inputs a
figure needs (the reference experiment, a run's rows) raise ``ValueError`` naming what is missing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patches, ticker  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from echomtl.atomic import PathLike, atomic_path, read_json, run_id_from_path  # noqa: E402
from echomtl.evaluation.vocabulary import AXIS_METRICS, METRIC_LABELS, TASK_METRICS
from echomtl.methods import model_variant  # noqa: E402
from echomtl.report.reading import DETECTION_EXAMPLES_RULE, SMALL_CLASS_BOXES  # noqa: E402
from echomtl.report.results import Results  # noqa: E402

__all__ = [
    "RC",
    "save_figure",
    "SMALL_CLASS_BOXES",
    "DETECTION_EXAMPLES_RULE",
    "fig_training_curves",
    "fig_gradnorm_weights",
    "fig_gradient_diagnostics",
    "fig_main_comparison",
    "fig_front",
    "fig_paired_differences",
    "fig_alpha_sensitivity",
    "fig_augmentation",
    "fig_detection_examples",
    "fig_confusion_matrix",
    "fig_per_class_ap",
]

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "svg.hashsalt": "echomtl",
    "savefig.dpi": 200,
    "figure.constrained_layout.use": True,
}
FULL_WIDTH = 7.0  # inches, a text-wide figure
PALETTE = plt.get_cmap("tab20").colors


def _colors(names: Sequence[str], order: Sequence[str] | None = None) -> dict[str, tuple]:
    order = list(order) if order is not None else list(names)
    extra = [n for n in names if n not in order]
    return {n: PALETTE[(2 * i) % 20 + (2 * i // 20) % 2] for i, n in enumerate(order + extra)}


def save_figure(fig: plt.Figure, out_stem: PathLike) -> list[Path]:
    """Save ``fig`` as ``out_stem.pdf`` and ``out_stem.png`` (atomically) and close it."""
    stem = Path(out_stem)
    if stem.suffix in (".pdf", ".png"):
        stem = stem.with_suffix("")
    paths = []
    for ext, meta in ((".pdf", {"CreationDate": None}), (".png", {"Software": None})):
        path = stem.with_name(stem.name + ext)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext[1:], metadata=meta, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _group_files(
    files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
) -> dict[str, list[Path]]:
    if isinstance(files, Mapping):
        items = {(str(e), int(s)): Path(p) for (e, s), p in files.items()}
    else:
        items = {run_id_from_path(p): Path(p) for p in files}
    out: dict[str, list[Path]] = {}
    for (exp, _seed), path in sorted(items.items()):
        out.setdefault(exp, []).append(path)
    if not out:
        raise ValueError("no run files given")
    return out


def _label(labels: Mapping[str, str] | None, exp: str) -> str:
    return (labels or {}).get(exp, exp)


def _mean_over_seeds(frames: list[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    data = pd.concat([f[[x, y]].assign(_run=i) for i, f in enumerate(frames)])
    data = data[np.isfinite(data[y].astype(float))]
    return data.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()


def _read_runs(paths: list[Path], need: set[str]) -> list[pd.DataFrame]:
    frames = []
    for p in paths:
        f = pd.read_csv(p)
        missing = need - set(f.columns)
        if missing:
            raise ValueError(f"{p}: lacks columns {sorted(missing)}")
        frames.append(f)
    return frames


def fig_training_curves(
    epochs_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    out_stem: PathLike,
    labels: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
) -> list[Path]:
    """Per-task training loss (``loss_det``, ``loss_cls`` of ``epochs.csv``) vs epoch, as small
    multiples: one panel per experiment, its two losses in two line styles (mean over seeds,
    shaded min-max when several), one y scale for all. A panel per experiment instead of one
    colour per experiment: fourteen near-identical colours in one panel cannot be told apart.
    A loss the model lacks (all NaN or zero) is not drawn in its panel.
    """
    runs = _group_files(epochs_files)
    names = [e for e in (order or runs) if e in runs]
    if not names:
        raise ValueError("fig_training_curves: no epochs.csv given")
    cols = min(4, len(names))  # four: a panel's title (the configuration's name) fits over it
    rows = math.ceil(len(names) / cols)
    styles = {"det": ("-", "C0", "detection loss $L_\\mathrm{det}$"),
              "cls": ("--", "C3", "view classification loss $L_\\mathrm{cls}$")}  # fmt: skip
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            rows, cols, figsize=(FULL_WIDTH, 1.35 * rows + 0.5), sharex=True, sharey=True,
            squeeze=False,
        )  # fmt: skip
        everything = []
        for ax, exp in zip(axes.flat, names, strict=False):
            for task, (ls, color, _) in styles.items():
                frames = _read_runs(runs[exp], {"epoch", f"loss_{task}"})
                agg = _mean_over_seeds(frames, "epoch", f"loss_{task}")
                if agg.empty or not np.any(agg["mean"].abs() > 0):
                    continue
                ax.plot(agg["epoch"], agg["mean"], ls=ls, color=color, lw=1.1)
                if len(frames) > 1:
                    ax.fill_between(
                        agg["epoch"], agg["min"], agg["max"], color=color, alpha=0.18, lw=0
                    )
                everything.append(agg["mean"])
            ax.set_title(_label(labels, exp), fontsize=7)
            ax.tick_params(labelsize=6.5)
        for ax in axes.flat[len(names) :]:
            ax.axis("off")
        values = pd.concat(everything) if everything else pd.Series(dtype=float)
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            axes.flat[0].set_yscale("log")
        fig.supxlabel("epoch", fontsize=8)
        fig.supylabel("mean training loss", fontsize=8)
        handles = [plt.Line2D([], [], ls=ls, color=c, lw=1.1, label=name)
                   for ls, c, name in styles.values()]  # fmt: skip
        fig.legend(handles=handles, loc="outside upper center", ncol=2, frameon=False)
        return save_figure(fig, out_stem)


def fig_gradnorm_weights(
    steps_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    out_stem: PathLike,
    labels: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
) -> list[Path]:
    """GradNorm task weights ``w_det``, ``w_cls`` vs optimizer step, one line per run (alpha)."""
    runs = _group_files(steps_files)
    colors = _colors(list(runs), order)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.6))
        for exp in [e for e in (order or runs) if e in runs]:
            frames = _read_runs(runs[exp], {"step", "weight_det", "weight_cls"})
            for k, frame in enumerate(frames):
                frame = frame.sort_values("step")
                for ax, col in zip(axes, ("weight_det", "weight_cls"), strict=True):
                    ax.plot(
                        frame["step"],
                        frame[col],
                        color=colors[exp],
                        lw=1.0,
                        alpha=0.9 if k == 0 else 0.5,
                        label=_label(labels, exp) if k == 0 else None,
                    )
        for ax, name in zip(
            axes,
            ("detection weight $w_\\mathrm{det}$", "classification weight $w_\\mathrm{cls}$"),
            strict=True,
        ):
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(name)
        if all(
            min(f["weight_cls"].min() for f in _read_runs(runs[e], {"weight_cls"})) > 0
            for e in runs
        ):
            vals = pd.concat(
                [f["weight_cls"] for e in runs for f in _read_runs(runs[e], {"weight_cls"})]
            )
            if vals.max() / vals.min() > 20:
                axes[1].set_yscale("log")
        # beside the data, never on it: the weights run across the whole panel
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)),
                   frameon=False)  # fmt: skip
        return save_figure(fig, out_stem)


#: Whiskers of the distribution boxes: these percentiles of the per-step values (no outliers).
BOX_WHISKERS = (2.5, 97.5)
_SCOPE_TITLES = {
    "W": "last shared layer (W)",
    "trunk": "whole shared trunk",
    "feature": "shared feature map",
}


def _hbox(ax: plt.Axes, values: Sequence[np.ndarray], colors: Sequence[tuple]) -> np.ndarray:
    """Horizontal boxes, the first on top; rows without values say "n/a". Returns positions."""
    y = np.arange(len(values))[::-1].astype(float)
    present = [i for i, v in enumerate(values) if len(v)]
    if present:
        boxes = ax.boxplot(
            [values[i] for i in present],
            positions=y[present],
            orientation="horizontal",
            whis=BOX_WHISKERS,
            showfliers=False,
            patch_artist=True,
            widths=0.62,
            medianprops={"color": "black", "lw": 1.1},
            whiskerprops={"lw": 0.8},
            capprops={"lw": 0.8},
            boxprops={"lw": 0.7},
            manage_ticks=False,
        )
        for patch, i in zip(boxes["boxes"], present, strict=True):
            patch.set_facecolor(colors[i])
            patch.set_edgecolor("0.2")
    for i, v in enumerate(values):
        if not len(v):
            ax.text(
                0.5, y[i], "n/a", ha="center", va="center", fontsize=7, color="grey",
                transform=ax.get_yaxis_transform(),
            )  # fmt: skip
    ax.set_ylim(-0.6, len(values) - 0.4)
    ax.grid(axis="y", visible=False)
    return y


def fig_gradient_diagnostics(
    diagnostics_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    out_stem: PathLike,
    labels: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
    scopes: Sequence[str] = ("W", "trunk"),
    norm_ratio: bool = False,
) -> list[Path]:
    """Distribution over training steps of the cosine between the two task gradients, one box per
    configuration, one panel per scope (``W``: the last shared layer; ``trunk``: all shared
    parameters).

    Caption: each box pools the logged steps of every seed given (box: quartiles, bar: median,
    whiskers: 2.5th to 97.5th percentile, no outliers drawn). The grey band is the central 95% of
    the null reference (the cosine between the detection gradients of two disjoint halves of one
    batch, ``null_cosine`` of ``diagnostics.csv``, pooled over every run and logged step of that
    scope): what sampling noise alone gives for two gradients of the same task. The dashed line
    is its median; the black line is 0 (orthogonal gradients; left of it, conflict).

    With ``norm_ratio`` a second row gives log10 of the weighted norm ratio
    ``wnorm_det / wnorm_cls`` (the task gradients as the update applied them). Every file given
    must have rows for every scope: pass only runs with a shared trunk.
    """
    runs = _group_files(diagnostics_files)
    colors = _colors(list(runs), order)
    exps = [e for e in (order or runs) if e in runs]
    need = {"step", "scope", "cosine"} | ({"wnorm_det", "wnorm_cls"} if norm_ratio else set())
    cos: dict[str, list[np.ndarray]] = {s: [] for s in scopes}
    ratio: dict[str, list[np.ndarray]] = {s: [] for s in scopes}
    nulls: dict[str, list[np.ndarray]] = {s: [] for s in scopes}
    for exp in exps:
        frames = _read_runs(runs[exp], need)
        for scope in scopes:
            parts = [f[f["scope"] == scope] for f in frames]
            for path, part in zip(runs[exp], parts, strict=True):
                if part.empty:
                    raise ValueError(
                        f"{path}: no '{scope}' rows (is {exp!r} a shared-trunk run, and was it "
                        "trained long enough for a whole-trunk diagnostic?)"
                    )
            part = pd.concat(parts)
            values = part["cosine"].astype(float).to_numpy()
            cos[scope].append(values[np.isfinite(values)])
            if "null_cosine" in part:
                null = part["null_cosine"].astype(float).to_numpy()
                nulls[scope].append(null[np.isfinite(null)])
            if norm_ratio:
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.log10(
                        part["wnorm_det"].astype(float).to_numpy()
                        / part["wnorm_cls"].astype(float).to_numpy()
                    )
                ratio[scope].append(r[np.isfinite(r)])
    row_colors = [colors[e] for e in exps]
    n_rows = 2 if norm_ratio else 1
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            n_rows,
            len(scopes),
            figsize=(FULL_WIDTH, n_rows * (0.24 * len(exps) + 0.9) + 0.5),
            sharey=True,
            squeeze=False,
        )
        band_drawn = False
        for j, scope in enumerate(scopes):
            ax = axes[0, j]
            null = np.concatenate(nulls[scope]) if nulls[scope] else np.array([])
            if len(null):
                lo, hi = np.percentile(null, [2.5, 97.5])
                ax.axvspan(lo, hi, color="0.86", lw=0, zorder=0)
                ax.axvline(float(np.median(null)), color="0.45", lw=0.9, ls="--", zorder=0.5)
                band_drawn = True
            y = _hbox(ax, cos[scope], row_colors)
            ax.axvline(0.0, color="black", lw=0.7, zorder=0.6)
            ax.set_title(_SCOPE_TITLES.get(scope, scope))
            ax.set_xlabel("cosine of the task gradients (per step)")
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5))
            if norm_ratio:
                axr = axes[1, j]
                _hbox(axr, ratio[scope], row_colors)
                axr.axvline(0.0, color="black", lw=0.7, zorder=0.6)
                axr.set_xlabel("log$_{10}$ weighted norm ratio\n(detection / classification)")
        for i in range(n_rows):
            axes[i, 0].set_yticks(y, [_label(labels, e) for e in exps])
        if band_drawn:
            handles = [
                patches.Patch(color="0.86", label="null reference, central 95%"),
                plt.Line2D([], [], color="0.45", lw=0.9, ls="--", label="null reference, median"),
            ]
            fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        return save_figure(fig, out_stem)


def _point_range(
    ax: plt.Axes, res: Results, exps: Sequence[str], metric: str, colors: dict
) -> None:
    y = np.arange(len(exps))[::-1]
    for yi, exp in zip(y, exps, strict=True):
        value = res.get(exp, metric)
        if math.isnan(value):
            ax.text(
                0.02,
                yi,
                "n/a",
                va="center",
                fontsize=7,
                color="grey",
                transform=ax.get_yaxis_transform(),
            )
            continue
        ci = res.interval(exp, metric)
        err = None
        if ci is not None:
            err = [[max(value - ci["low"], 0)], [max(ci["high"] - value, 0)]]
        marker = "D" if exp == res.reference else "o"
        ax.errorbar(value, yi, xerr=err, fmt=marker, color=colors[exp], ms=4.5, capsize=2.5, lw=1.1)
    ref = res.get(res.reference, metric)
    if not math.isnan(ref):
        ax.axvline(ref, color="grey", lw=0.7, ls="--")
    ax.set_yticks(y)
    ax.set_xlabel(METRIC_LABELS.get(metric, metric))


def fig_main_comparison(
    res: Results,
    out_stem: PathLike,
    metrics: Sequence[str] = AXIS_METRICS,
    groups: Sequence[str] | None = None,
) -> list[Path]:
    """Test metrics of every main-table group with 95% bootstrap intervals (dashed: reference)."""
    groups = list(groups) if groups is not None else res.study.main_groups
    exps = [res.chosen[g] for g in groups]
    colors = _colors(exps, list(res.experiments.index))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(FULL_WIDTH, 0.32 * len(exps) + 1.1), sharey=True
        )
        axes = np.atleast_1d(axes)
        for ax, metric in zip(axes, metrics, strict=True):
            _point_range(ax, res, exps, metric, colors)
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4))  # small values: no overlap
        axes[0].set_yticklabels([res.plain_label(e) for e in exps])
        return save_figure(fig, out_stem)


def _errorbar_series(
    ax: plt.Axes,
    res: Results,
    exps: Sequence[str],
    xs: Sequence[float],
    metric: str,
    color: tuple,
    label: str,
) -> None:
    vals, lows, highs = [], [], []
    for exp in exps:
        v = res.get(exp, metric)
        ci = res.interval(exp, metric)
        vals.append(v)
        lows.append(max(v - ci["low"], 0) if ci else 0.0)
        highs.append(max(ci["high"] - v, 0) if ci else 0.0)
    ax.errorbar(
        xs, vals, yerr=[lows, highs], fmt="o-", color=color, capsize=3, ms=4, lw=1.1, label=label
    )


def _darken(color: tuple, amount: float = 0.35) -> tuple:
    """A darker shade, so that text in a pale palette colour stays readable."""
    return tuple(np.asarray(matplotlib.colors.to_rgb(color)) * (1.0 - amount))


def _letters(n: int) -> list[str]:
    """A, B, ..., Z, AA, AB, ...: short keys of points named in a legend."""
    out = []
    for i in range(n):
        s, k = "", i
        while True:
            s = chr(ord("A") + k % 26) + s
            k = k // 26 - 1
            if k < 0:
                break
        out.append(s)
    return out


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def _place_labels(
    fig: plt.Figure,
    ax: plt.Axes,
    texts: Sequence,
    anchors: Sequence[tuple[float, float]],
    line: Sequence[tuple[float, float]] = (),
) -> None:
    """Move each annotation (offset in points) to the candidate position that overlaps least with
    the labels already placed, the marked points, the polyline ``line`` and the axes border
    (greedy, deterministic)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    r = 4.5 * fig.dpi / 72
    marks = [
        Bbox.from_extents(px - r, py - r, px + r, py + r)
        for px, py in ax.transData.transform(np.asarray(anchors, dtype=float))
    ]
    if len(line) > 1:
        pts = ax.transData.transform(np.asarray(line, dtype=float))
        q = 1.2 * fig.dpi / 72
        for a, b in itertools.pairwise(pts):
            for t in np.linspace(0.0, 1.0, 40):
                px, py = a + t * (b - a)
                marks.append(Bbox.from_extents(px - q, py - q, px + q, py + q))
    frame = ax.get_window_extent(renderer)
    candidates = [(5, 4), (5, -11), (-5, 4), (-5, -11), (7, -3.5), (-7, -3.5), (0, 7), (0, -15)]

    def align(dx: float) -> str:
        return "left" if dx > 0 else "right" if dx < 0 else "center"

    placed: list[Bbox] = []
    for text in texts:
        best, best_cost = candidates[0], math.inf
        for dx, dy in candidates:
            text.set_position((dx, dy))
            text.set_horizontalalignment(align(dx))
            box = text.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, frame)
            cost = 3 * outside + sum(_overlap(box, b) for b in placed + marks)
            if cost < best_cost - 1e-9:
                best, best_cost = (dx, dy), cost
        text.set_position(best)
        text.set_horizontalalignment(align(best[0]))
        placed.append(text.get_window_extent(renderer))


#: a text label and the box (x1, y1, x2, y2, data coordinates) it names
BoxLabel = tuple[Text, tuple[float, float, float, float]]


def _place_box_labels(fig: plt.Figure, ax: plt.Axes, labels: Sequence[BoxLabel]) -> None:
    """Put each box's label (in order: ground truth first) where it overlaps no label placed
    before it: above or below the box at its left or right edge, then stacked further out one
    label height at a time (greedy, deterministic; leaving the image costs more than moving)."""
    if not labels:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_data = ax.transData.inverted()
    placed: list[Bbox] = []
    for text, (x1, y1, x2, y2) in labels:
        height = 1.25 * text.get_window_extent(renderer).height  # a gap between stacked labels
        # display units per data unit along y (the image's y axis points down)
        dy = abs(to_data.transform((0, height))[1] - to_data.transform((0, 0))[1])
        candidates = [
            (x, y, ha, va)
            for k in range(6)
            for x, ha in ((x1, "left"), (x2, "right"))
            for y, va in ((y1 - 3 - k * dy, "bottom"), (y2 + 3 + k * dy, "top"))
        ]
        best, best_cost = candidates[0], math.inf
        for x, y, ha, va in candidates:
            text.set_position((x, y))
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            box = text.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, frame)
            cost = sum(_overlap(box.padded(2), b) for b in placed) + 0.5 * outside
            if cost < best_cost - 1e-9:
                best, best_cost = (x, y, ha, va), cost
            if cost == 0:
                break
        x, y, ha, va = best
        text.set_position((x, y))
        text.set_horizontalalignment(ha)
        text.set_verticalalignment(va)
        placed.append(text.get_window_extent(renderer))


def _xy_err(res: Results, exps: Sequence[str]) -> tuple[list, list, np.ndarray, np.ndarray]:
    xs = [res.get(e, "view_accuracy") for e in exps]
    ys = [res.get(e, "map50") for e in exps]
    xerr = np.zeros((2, len(exps)))
    yerr = np.zeros((2, len(exps)))
    for i, e in enumerate(exps):
        for err, metric, v in ((xerr, "view_accuracy", xs[i]), (yerr, "map50", ys[i])):
            ci = res.interval(e, metric)
            if ci is not None:
                err[:, i] = [max(v - ci["low"], 0.0), max(ci["high"] - v, 0.0)]
    return xs, ys, xerr, yerr


def fig_front(res: Results, out_stem: PathLike) -> list[Path]:
    """Test mAP@0.5 against view accuracy: where every configuration of the study sits relative
    to the front that fixed weights trace (Xin et al. 2022).

    Caption: the grey points are the fixed-weight runs (labelled with their classification
    weight $w_\\mathrm{cls}$), joined in weight order by a dotted line; the solid line is their
    Pareto front, through the runs that no other fixed weight beats on both metrics; every other
    configuration of the study with both metrics (the main table's, then the reference's alpha
    and augmentation variants) is a lettered point, named in the
    legend. Bars: 95% bootstrap intervals where computed. Hollow: a fixed-weight run is at least
    as good on both metrics (``report.front``).
    """
    from echomtl.report.front import dominated_by, non_dominated

    front = res.study.front_runs
    if len(front) < 2:
        raise ValueError("fig_front: fewer than two fixed-weight runs with a view head ran")
    others = res.front_rivals()
    colors = _colors(others, list(res.experiments.index))
    keys = _letters(len(others))
    fixed_points = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in front}
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(FULL_WIDTH, 3.9))
        fx, fy, fxe, fye = _xy_err(res, front)
        ax.errorbar(
            fx, fy, xerr=fxe, yerr=fye, fmt="none", ecolor="0.55", elinewidth=0.7, capsize=0,
            alpha=0.35, zorder=1,
        )  # fmt: skip
        ax.plot(fx, fy, ":", color="0.55", lw=0.9, zorder=2)
        # the Pareto front: the non-dominated fixed-weight runs, by view accuracy (x)
        on_front = sorted(
            non_dominated({e: (x, y) for e, x, y in zip(front, fx, fy, strict=True)}),
            key=lambda e: fx[front.index(e)],
        )
        ax.plot(
            [fx[front.index(e)] for e in on_front], [fy[front.index(e)] for e in on_front],
            "-", color="0.25", lw=1.5, zorder=2,
        )  # fmt: skip
        ax.scatter(fx, fy, color="0.35", s=24, zorder=3)
        handles = [
            plt.Line2D(
                [], [], color="0.55", ls=":", marker="o", ms=4.5, lw=0.9, mfc="0.35", mec="0.35",
                label="fixed weights, in $w_\\mathrm{cls}$ order (number: $w_\\mathrm{cls}$)",
            ),
            plt.Line2D([], [], color="0.25", lw=1.5, label="Pareto front of the fixed weights"),
        ]  # fmt: skip
        texts, anchors = [], []
        for e, x, y in zip(front, fx, fy, strict=True):
            texts.append(
                ax.annotate(
                    f"{float(res.row(e)['w_cls']):g}",
                    (x, y),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color="0.3",
                    zorder=5,
                )  # fmt: skip
            )
            anchors.append((x, y))
        ox, oy, oxe, oye = _xy_err(res, others)
        for i, e in enumerate(others):
            dominated = bool(dominated_by((oy[i], ox[i]), fixed_points))
            marker = "D" if e == res.reference else "o"
            ax.errorbar(
                ox[i], oy[i], xerr=oxe[:, i : i + 1], yerr=oye[:, i : i + 1], fmt="none",
                ecolor=colors[e], elinewidth=0.8, capsize=1.5, alpha=0.55, zorder=3,
            )  # fmt: skip
            ax.scatter(
                ox[i], oy[i], s=34, zorder=4, marker=marker, linewidths=1.3,
                facecolors="white" if dominated else colors[e], edgecolors=colors[e],
            )  # fmt: skip
            texts.append(
                ax.annotate(
                    keys[i],
                    (ox[i], oy[i]),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7.5,
                    fontweight="bold",
                    color=_darken(colors[e]),
                    zorder=5,
                )  # fmt: skip
            )
            anchors.append((ox[i], oy[i]))
            handles.append(
                plt.Line2D(
                    [], [], ls="none", marker=marker, ms=5, mew=1.3, color=colors[e],
                    mfc="white" if dominated else colors[e],
                    label=f"{keys[i]}  {res.plain_label(e)}{' (dominated)' if dominated else ''}",
                )
            )  # fmt: skip
        ax.set_xlabel("test view accuracy")
        ax.set_ylabel("test mAP@0.5")
        ax.legend(
            handles=handles, frameon=False, fontsize=7, loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            title="dominated (hollow): some fixed weighting\nis at least as good on both metrics",
            alignment="left",
            title_fontsize=7,
        )  # fmt: skip
        _place_labels(fig, ax, texts, anchors, list(zip(fx, fy, strict=True)))
        return save_figure(fig, out_stem)


def _paired_rows(
    res: Results,
    metrics: Sequence[str],
    claimed: Mapping[str, float],
    claimed_metric: str,
    experiments: Sequence[str] | None,
) -> list[str]:
    if experiments is None:
        experiments = [res.chosen[g] for g in res.study.main_groups]
        experiments += [e for e in res.experiments.index if e in claimed and e not in experiments]
    rows = []
    for e in experiments:
        if e == res.reference or e in rows:
            continue
        if any(res.pair(e, m) is not None for m in metrics):
            rows.append(str(e))
    return rows


def fig_paired_differences(
    res: Results,
    out_stem: PathLike,
    metrics: Sequence[str] = TASK_METRICS,
    claimed: Mapping[str, float] | None = None,
    claimed_metric: str = "map50",
    experiments: Sequence[str] | None = None,
) -> list[Path]:
    """Forest plot of the paired test differences, reference minus each configuration.

    Caption: one panel per metric, one row per configuration of the main table compared with the
    reference (and any other with a ``claimed`` value); point: the difference on the same test
    images, bar: its 95% paired bootstrap interval; right of the black line at 0 the reference
    did better. Open diamonds: the difference the seed guide claims (``claimed``, by experiment,
    drawn on the ``claimed_metric`` panel only). ``experiments`` overrides the rows.
    """
    claimed = dict(claimed or {})
    metrics = [m for m in metrics if any(res.pair(e, m) is not None for e in res.paired)]
    if not metrics:
        raise ValueError("fig_paired_differences: no paired comparison with the reference")
    exps = _paired_rows(res, metrics, claimed, claimed_metric, experiments)
    if not exps:
        raise ValueError("fig_paired_differences: no configuration was compared with the reference")
    colors = _colors(exps, list(res.experiments.index))
    ref_label = res.plain_label(res.reference)
    y = np.arange(len(exps))[::-1]
    drew_claim = False
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            1, len(metrics), figsize=(FULL_WIDTH, 0.3 * len(exps) + 1.5), sharey=True,
            squeeze=False,
        )  # fmt: skip
        for ax, metric in zip(axes[0], metrics, strict=True):
            ax.axvline(0.0, color="black", lw=0.8, zorder=1)
            for yi, e in zip(y, exps, strict=True):
                p = res.pair(e, metric)
                if p is None or p.get("diff") is None or math.isnan(p["diff"]):
                    ax.text(
                        0.5, yi, "n/a", ha="center", va="center", fontsize=7, color="grey",
                        transform=ax.get_yaxis_transform(),
                    )  # fmt: skip
                else:
                    d = float(p["diff"])
                    err = [[max(d - float(p["low"]), 0.0)], [max(float(p["high"]) - d, 0.0)]]
                    ax.errorbar(
                        d, yi, xerr=err, fmt="o", color=colors[e], ms=4.5, capsize=2.5, lw=1.2,
                        zorder=3,
                    )  # fmt: skip
                if metric == claimed_metric and e in claimed:
                    ax.scatter(
                        float(claimed[e]), yi, marker="D", s=34, facecolors="none",
                        edgecolors="black", linewidths=1.1, zorder=4,
                    )  # fmt: skip
                    drew_claim = True
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.set_xlabel(f"{ref_label} minus configuration\n(> 0: {ref_label} better)")
            ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=5))
            ax.grid(axis="y", visible=False)
        axes[0, 0].set_yticks(y, [res.plain_label(e) for e in exps])
        axes[0, 0].set_ylim(-0.6, len(exps) - 0.4)
        handles = [
            plt.Line2D(
                [], [], color="0.3", marker="o", ms=4.5, lw=1.2,
                label="paired difference, 95% interval",
            )
        ]  # fmt: skip
        if drew_claim:
            handles.append(
                plt.Line2D(
                    [], [], ls="none", marker="D", ms=5.5, mfc="none", mec="black", mew=1.1,
                    label="claimed by the seed guide",
                )
            )  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        return save_figure(fig, out_stem)


def fig_alpha_sensitivity(res: Results, out_stem: PathLike) -> list[Path]:
    """Reference method vs alpha: test metrics (with intervals) and final task weights."""
    alphas = res.study.alpha_variants
    if len(alphas) < 2:
        raise ValueError("fig_alpha_sensitivity: fewer than two alpha values ran")
    xs = [float(res.row(e)["alpha"]) for e in alphas]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.6))
        for i, metric in enumerate(AXIS_METRICS):
            if any(res.has(e, metric) for e in alphas):
                _errorbar_series(
                    axes[0], res, alphas, xs, metric, PALETTE[2 * i], METRIC_LABELS[metric]
                )
        axes[0].set_xlabel("GradNorm α")
        axes[0].set_ylabel("test value (95% CI)")
        axes[0].set_xticks(xs)
        # legends below the axes, never over the points
        below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.24), "frameon": False}
        axes[0].legend(ncol=3, **below)
        for i, (col, name) in enumerate(
            (
                ("weight_det_final", "final $w_\\mathrm{det}$"),
                ("weight_cls_final", "final $w_\\mathrm{cls}$"),
            )
        ):
            axes[1].plot(
                xs,
                [res.get(e, col, "train") for e in alphas],
                "s-",
                color=PALETTE[2 * i + 6],
                label=name,
            )
        axes[1].set_xlabel("GradNorm α")
        axes[1].set_ylabel("task weight at the last step")
        axes[1].set_xticks(xs)
        axes[1].legend(ncol=2, **below)
        return save_figure(fig, out_stem)


def fig_augmentation(
    res: Results,
    out_stem: PathLike,
    metrics: Sequence[str] = ("map50", "map50_95", "precision", "recall", "view_accuracy"),
) -> list[Path]:
    """Reference method with augmentation off vs on, per metric (intervals where computed)."""
    aug = res.study.augmentation_variant
    if aug is None:
        raise ValueError("fig_augmentation: no augmentation variant of the reference ran")
    metrics = [m for m in metrics if res.has(res.reference, m) or res.has(aug, m)]
    x = np.arange(len(metrics))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(FULL_WIDTH * 0.6, 2.6))
        for k, (exp, name) in enumerate(
            ((res.reference, "augmentation off"), (aug, "augmentation on"))
        ):
            vals = [res.get(exp, m) for m in metrics]
            err = [[0.0] * len(metrics), [0.0] * len(metrics)]
            for i, m in enumerate(metrics):
                ci = res.interval(exp, m)
                if ci is not None:
                    err[0][i] = max(vals[i] - ci["low"], 0)
                    err[1][i] = max(ci["high"] - vals[i], 0)
            ax.bar(
                x + (k - 0.5) * 0.38,
                vals,
                0.38,
                yerr=err,
                capsize=2.5,
                color=PALETTE[2 * k],
                label=name,
            )
        ax.set_xticks(x)
        ax.set_xticklabels([METRIC_LABELS.get(m, m) for m in metrics], rotation=15)
        ax.set_ylabel("test value")
        ax.legend(frameon=False, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        return save_figure(fig, out_stem)


#: Ground-truth boxes: solid, in this colour (no prediction colour is close to it).
GT_COLOR = "#2bd92b"
#: Prediction colours by class index (tab10 without its green, kept for the ground truth).
PRED_COLORS = tuple(plt.get_cmap("tab10").colors[i] for i in (1, 6, 9, 4, 0, 5, 8, 7))


def _pick_examples(images: list[dict], n: int, n_classes: int) -> list[dict]:
    """Deterministic choice, blind to predictions (:data:`DETECTION_EXAMPLES_RULE`)."""
    ordered = sorted(images, key=lambda im: im["name"])
    chosen: list[dict] = []
    for c in range(n_classes):
        if len(chosen) == n:
            return chosen
        for im in ordered:
            if im not in chosen and any(int(g[0]) == c for g in im.get("gt", [])):
                chosen.append(im)
                break
    for im in ordered:
        if len(chosen) == n:
            break
        if im not in chosen:
            chosen.append(im)
    return chosen


def fig_detection_examples(
    predictions_json: PathLike,
    records_csv: PathLike,
    out_stem: PathLike,
    n_images: int = 4,
    conf_threshold: float | None = None,
    metrics_json: PathLike | None = None,
    max_boxes: int = 3,
    images_root: PathLike | None = None,
) -> list[Path]:
    """Test images with their ground-truth boxes (solid green) and predicted boxes (dashed, class
    and score), titled with the true and predicted view (green: right, red: wrong).

    Which images: :data:`DETECTION_EXAMPLES_RULE`. Images are read from their original files:
    ``records_csv`` (the records or splits table of the scheme the runs used, or all records
    under cross-validation) maps each predictions-JSON ``name`` to ``image_path`` (by file name).
    Predictions above the confidence threshold are drawn (at most ``max_boxes`` per image,
    highest score first); the threshold is ``conf_threshold``, else the best-F1 confidence of
    ``metrics_json``, else 0.25. ``images_root``: the export's root on this machine; each image
    is then read from ``<root>/<split>/images/<file>`` (the export layout) rather than from the
    path the records hold, which names the machine that converted the export (a results archive
    unpacked elsewhere keeps that path).
    """
    from PIL import Image

    preds = read_json(predictions_json)
    class_names, view_names = preds["class_names"], preds.get("view_names") or []
    records = pd.read_csv(records_csv)
    predicted = {im["name"] for im in preds["images"]}
    records = records[records["image_path"].map(lambda p: Path(p).name in predicted)]
    names = records["image_path"].map(lambda p: Path(p).name)
    dup = sorted(set(names[names.duplicated()]))
    if dup:
        raise ValueError(f"{records_csv}: several test images share the file name(s) {dup[:5]}")
    paths = dict(zip(names, records["image_path"], strict=True))
    if conf_threshold is None:
        conf_threshold = 0.25
        if metrics_json is not None:
            conf_threshold = float(read_json(metrics_json)["detection"].get("best_conf") or 0.25)
    chosen = _pick_examples(preds["images"], n_images, len(class_names))
    if not chosen:
        raise ValueError(f"{predictions_json}: no images")

    def view(i: int | None) -> str:
        if i is None:
            return "none"
        return view_names[i] if 0 <= i < len(view_names) else "missing"

    cols = min(len(chosen), 4)
    rows = math.ceil(len(chosen) / cols)
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, axes = plt.subplots(
            rows, cols, figsize=(FULL_WIDTH, FULL_WIDTH / cols * 0.8 * rows + 0.4), squeeze=False
        )
        for ax in axes.flat:
            ax.axis("off")
        for ax, im in zip(axes.flat, chosen, strict=False):
            if im["name"] not in paths:
                raise ValueError(f"{records_csv}: no image_path for test image {im['name']!r}")
            path = Path(paths[im["name"]])
            if images_root is not None:
                path = Path(images_root) / path.parent.parent.name / "images" / path.name
            if not path.exists():
                raise ValueError(f"image file {path} (test image {im['name']!r}) does not exist")
            with Image.open(path) as pil:
                ax.imshow(np.asarray(pil.convert("RGB")))
            labels: list[BoxLabel] = []
            for c, x1, y1, x2, y2 in im.get("gt", []):
                ax.add_patch(
                    patches.Rectangle(
                        (x1, y1), x2 - x1, y2 - y1, fill=False, ec=GT_COLOR, lw=2.4, zorder=3
                    )
                )
                text = ax.text(
                    x1, y2 + 3, f"GT {class_names[int(c)]}", color="black", fontsize=6.5,
                    va="top", zorder=4, bbox={"fc": GT_COLOR, "alpha": 0.9, "pad": 1, "lw": 0},
                )  # fmt: skip
                labels.append((text, (x1, y1, x2, y2)))
            shown = sorted(
                (p for p in im.get("pred", []) if p[1] >= conf_threshold), key=lambda p: -p[1]
            )[:max_boxes]
            for c, score, x1, y1, x2, y2 in shown:
                col = PRED_COLORS[int(c) % len(PRED_COLORS)]
                ax.add_patch(
                    patches.Rectangle(
                        (x1, y1), x2 - x1, y2 - y1, fill=False, ec=col, lw=1.3,
                        ls=(0, (3.5, 2.0)), zorder=5,
                    )
                )  # fmt: skip
                text = ax.text(
                    x1, y1 - 3, f"{class_names[int(c)]} {score:.2f}", color="black",
                    fontsize=6.5, va="bottom", zorder=6,
                    bbox={"fc": col, "alpha": 0.9, "pad": 1, "lw": 0},
                )  # fmt: skip
                labels.append((text, (x1, y1, x2, y2)))
            _place_box_labels(fig, ax, labels)
            vt, vp = im.get("view_true"), im.get("view_pred")
            ok = vp is not None and vt == vp
            title = f"true view: {view(vt)}"
            if vp is not None:
                title += f"\npredicted view: {view(vp)}"
            ax.set_title(
                title,
                fontsize=7.5,
                color="black" if vp is None else ("darkgreen" if ok else "firebrick"),
            )
        handles = [
            plt.Line2D([], [], color=GT_COLOR, lw=2.4, label="ground truth (solid)"),
            plt.Line2D(
                [], [], color=PRED_COLORS[0], lw=1.3, ls=(0, (3.5, 2.0)),
                label=f"prediction with score ≥ {conf_threshold:.2f} (dashed; class, score)",
            ),
        ]  # fmt: skip
        fig.legend(handles=handles, loc="outside upper center", ncol=2, frameon=False)
        return save_figure(fig, out_stem)


def fig_confusion_matrix(
    metrics_files: Sequence[PathLike] | PathLike, out_stem: PathLike
) -> list[Path]:
    """View confusion matrix (rows: true view, with its number of test images; columns:
    predicted), summed over the seeds given.

    Cells show the row share (the fraction of that true view predicted as the column's view;
    also the colour) and, below it, the count.
    """
    files = [metrics_files] if isinstance(metrics_files, str | Path) else list(metrics_files)
    total = None
    labels = None
    for path in files:
        data = read_json(path)
        cls = data.get("classification")
        if cls is None:
            raise ValueError(f"{path}: no classification metrics (model without a view head?)")
        cm = np.asarray(cls["confusion_matrix"], dtype=float)
        if labels is not None and list(cls["labels"]) != labels:
            raise ValueError(f"{path}: view labels {cls['labels']} differ from {labels}")
        labels = list(cls["labels"])
        total = cm if total is None else total + cm
    assert total is not None and labels is not None
    rowsum = total.sum(axis=1, keepdims=True)
    frac = np.divide(total, rowsum, out=np.zeros_like(total), where=rowsum > 0)
    seeds = f", summed over {len(files)} seeds" if len(files) > 1 else ""
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(3.5, 3.0))
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(total.shape[0]):
            for j in range(total.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{100 * frac[i, j]:.0f}%\n({int(total[i, j])})",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if frac[i, j] > 0.55 else "black",
                )
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(
            range(len(labels)),
            [f"{v} (n={int(n)})" for v, n in zip(labels, rowsum[:, 0], strict=True)],
        )
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set_xlabel("predicted view")
        ax.set_ylabel(f"true view (n: test images{seeds})")
        return save_figure(fig, out_stem)


_AP_LABELS = {"ap50": "AP@0.5", "ap50_95": "AP@0.5:0.95"}


def _class_boxes(res: Results, exps: Sequence[str], classes: Sequence[str]) -> dict[str, int]:
    """Test boxes per class (``n_gt/<class>`` of the tidy table): the reference's count, else the
    first experiment shown that has one (all runs are evaluated on the same test images)."""
    out = {}
    for c in classes:
        for e in [res.reference, *exps]:
            if res.has(e, f"n_gt/{c}"):
                out[c] = int(round(res.get(e, f"n_gt/{c}")))
                break
    return out


def _lighten(color: tuple, amount: float = 0.6) -> tuple:
    rgb = np.asarray(matplotlib.colors.to_rgb(color))
    return tuple(rgb + (1.0 - rgb) * amount)


def fig_per_class_ap(
    res: Results,
    out_stem: PathLike,
    groups: Sequence[str] | None = None,
    metric: str = "ap50",
    small_class_boxes: int = SMALL_CLASS_BOXES,
) -> list[Path]:
    """Test AP@0.5 per detection class for every main-table group (mean over seeds).

    Caption: each class is labelled with its number of test boxes (``n_gt`` of the metrics);
    classes with fewer than ``small_class_boxes`` boxes have hatched, paler bars, as their AP
    rests on a handful of boxes. Box counts missing from the results are left out of the labels.
    """
    if metric not in _AP_LABELS:
        raise ValueError(f"fig_per_class_ap: metric {metric!r} is not one of {sorted(_AP_LABELS)}")
    groups = list(groups) if groups is not None else res.study.main_groups
    classes = res.class_names()
    if not classes:
        raise ValueError("fig_per_class_ap: no per-class AP in the results")
    # a model without a detector (the view classifier alone) has no bar here, nor a legend entry
    exps = [e for e in (res.chosen[g] for g in groups)
            if "det" in model_variant(res.row(e)["model"]).tasks]  # fmt: skip
    colors = _colors(exps, list(res.experiments.index))
    boxes = _class_boxes(res, exps, classes)
    small = [c in boxes and boxes[c] < small_class_boxes for c in classes]
    width = 0.8 / len(exps)
    x = np.arange(len(classes))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(FULL_WIDTH, 2.9))
        for xi, s in zip(x, small, strict=True):
            if s:  # visible however short the bars are
                ax.axvspan(
                    xi - 0.46, xi + 0.46, facecolor="none", edgecolor="0.82", hatch="////",
                    lw=0, zorder=0,
                )  # fmt: skip
        for k, exp in enumerate(exps):
            vals = [res.get(exp, f"{metric}/{c}") for c in classes]
            ax.bar(
                x - 0.4 + (k + 0.5) * width,
                vals,
                width,
                color=[_lighten(colors[exp]) if s else colors[exp] for s in small],
                edgecolor=[colors[exp] if s else "none" for s in small],
                hatch=["////" if s else "" for s in small],
                lw=0.6,
                label=res.plain_label(exp),
            )
        ax.set_xticks(x, [f"{c}\n(n={boxes[c]})" if c in boxes else c for c in classes])
        for tick, s in zip(ax.get_xticklabels(), small, strict=True):
            if s:
                tick.set_color("0.4")
        ax.set_xlabel("regurgitation class (n: test boxes)" if boxes else "regurgitation class")
        ax.set_ylabel(f"test {_AP_LABELS[metric]}")
        handles = [patches.Patch(color=colors[e], label=res.plain_label(e)) for e in exps]
        if any(small):
            handles.append(
                patches.Patch(
                    facecolor="white", edgecolor="0.4", hatch="////", lw=0.6,
                    label=f"hatched: fewer than {small_class_boxes} test boxes",
                )
            )  # fmt: skip
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        return save_figure(fig, out_stem)
