"""Figures of the paper: one function per figure, each writing ``<out_stem>.pdf`` and ``.png``.

Conventions: the Agg backend (no display, no network), fixed fonts and sizes, colours fixed per
experiment by its row in the experiments table, PDF metadata without a creation date (so a
figure is byte-identical when its inputs are). Functions return the two paths written.
Inputs that the study may legitimately lack (no torchjd method, one seed) are handled; inputs a
figure needs (the reference experiment, a run's rows) raise ``ValueError`` naming what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patches, ticker  # noqa: E402

from echomtl.report._io import PathLike, atomic_path, read_json, run_id_from_path  # noqa: E402
from echomtl.report.results import METRIC_LABELS, Results  # noqa: E402

__all__ = [
    "RC",
    "save_figure",
    "fig_training_curves",
    "fig_gradnorm_weights",
    "fig_gradient_diagnostics",
    "fig_main_comparison",
    "fig_front",
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
    """Per-task training loss (``loss_det``, ``loss_cls`` of ``epochs.csv``) vs epoch.

    One line per experiment (mean over seeds, shaded min-max when several seeds). Experiments
    whose classification loss is all zero or NaN (no head) are left out of that panel only.
    """
    runs = _group_files(epochs_files)
    colors = _colors(list(runs), order)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.8))
        for ax, task, title in zip(
            axes, ("det", "cls"), ("Detection loss", "View classification loss"), strict=True
        ):
            plotted = []
            for exp in [e for e in (order or runs) if e in runs]:
                frames = _read_runs(runs[exp], {"epoch", f"loss_{task}"})
                agg = _mean_over_seeds(frames, "epoch", f"loss_{task}")
                if agg.empty or np.all(agg["mean"].abs() <= 0):
                    continue
                ax.plot(
                    agg["epoch"], agg["mean"], color=colors[exp], lw=1.2, label=_label(labels, exp)
                )
                if len(frames) > 1:
                    ax.fill_between(
                        agg["epoch"], agg["min"], agg["max"], color=colors[exp], alpha=0.15, lw=0
                    )
                plotted.append(agg["mean"])
            if not plotted:
                ax.text(0.5, 0.5, "no run with this loss", ha="center", transform=ax.transAxes)
            else:
                values = pd.concat(plotted)
                if values.min() > 0 and values.max() / values.min() > 20:
                    ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"mean training loss $L_\\mathrm{{{task}}}$")
        handles, names = axes[0].get_legend_handles_labels()
        h2, n2 = axes[1].get_legend_handles_labels()
        for h, n in zip(h2, n2, strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
        fig.legend(
            handles, names, loc="outside lower center", ncol=min(4, len(names)), frameon=False
        )
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
        axes[0].legend(frameon=False)
        return save_figure(fig, out_stem)


def _smooth(values: pd.Series, n: int) -> pd.Series:
    window = max(1, n // 25)
    return values.rolling(window, min_periods=1, center=True).mean()


def fig_gradient_diagnostics(
    diagnostics_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    out_stem: PathLike,
    labels: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None,
    scopes: Sequence[str] = ("W", "trunk"),
) -> list[Path]:
    """Cosine between task gradients and their norm ratio over training, per scope.

    Rows: cosine similarity (with the median null-reference cosine of the runs drawn as a dashed
    grey line: what two halves of one batch give), log10 of the weighted norm ratio
    ``wnorm_det / wnorm_cls`` (the task gradients as the update applied them); columns:
    ``scopes`` (``W``: the last shared layer; ``trunk``: all shared parameters). Lines are
    smoothed with a centred moving average over 1/25 of the logged steps; the first seed of each
    experiment is drawn. Every file given must have rows for every scope: pass only runs with a
    shared trunk.
    """
    runs = _group_files(diagnostics_files)
    colors = _colors(list(runs), order)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(
            2, len(scopes), figsize=(FULL_WIDTH, 4.6), sharex=True, squeeze=False
        )
        nulls: dict[str, list[float]] = {}
        for exp in [e for e in (order or runs) if e in runs]:
            need = {"step", "scope", "cosine", "wnorm_det", "wnorm_cls", "null_cosine"}
            frame = _read_runs(runs[exp][:1], need)[0]
            for j, scope in enumerate(scopes):
                part = frame[frame["scope"] == scope].sort_values("step")
                if part.empty:
                    raise ValueError(
                        f"{runs[exp][0]}: no '{scope}' rows (is {exp!r} a shared-trunk run, and "
                        "was it trained long enough for a whole-trunk diagnostic?)"
                    )
                nulls.setdefault(scope, []).extend(part["null_cosine"].dropna().astype(float))
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = np.log10(
                        part["wnorm_det"].astype(float) / part["wnorm_cls"].astype(float)
                    )
                ratio = ratio.replace([np.inf, -np.inf], np.nan)
                n = len(part)
                axes[0, j].plot(
                    part["step"],
                    _smooth(part["cosine"].astype(float), n),
                    color=colors[exp],
                    lw=1.0,
                    label=_label(labels, exp) if j == 0 else None,
                )
                axes[1, j].plot(part["step"], _smooth(ratio, n), color=colors[exp], lw=1.0)
        for j, scope in enumerate(scopes):
            axes[0, j].set_title(
                {
                    "W": "last shared layer (W)",
                    "trunk": "whole shared trunk",
                    "feature": "shared feature map",
                }.get(scope, scope)
            )
            axes[0, j].axhline(0.0, color="black", lw=0.6)
            if nulls.get(scope):
                axes[0, j].axhline(
                    float(np.median(nulls[scope])), color="grey", lw=1.0, ls="--",
                    label="null reference (two half-batches)" if j == 0 else None,
                )  # fmt: skip
            axes[1, j].axhline(0.0, color="black", lw=0.6)
            axes[1, j].set_xlabel("optimizer step")
        axes[0, 0].set_ylabel("cosine of the task gradients")
        axes[1, 0].set_ylabel("log$_{10}$ weighted norm ratio\n(detection / classification)")
        fig.legend(loc="outside lower center", ncol=min(4, len(runs)), frameon=False)
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
    metrics: Sequence[str] = ("map50", "map50_95", "view_accuracy"),
    groups: Sequence[str] | None = None,
) -> list[Path]:
    """Test metrics of every main-table group with 95% bootstrap intervals (dashed: reference)."""
    groups = list(groups) if groups is not None else res.main_groups()
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


def fig_front(res: Results, out_stem: PathLike) -> list[Path]:
    """Test mAP@0.5 against view accuracy: the fixed-weight front (line, labelled with w_cls)
    and every other configuration of the main table (points; hollow when a fixed-weight run
    dominates it, ``report.front``)."""
    from echomtl.report.front import dominated_by

    front = res.front_runs()
    if len(front) < 2:
        raise ValueError("fig_front: fewer than two fixed-weight runs with a view head ran")
    rivals = res.front_rivals()
    point = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in front + rivals}
    colors = _colors(rivals, list(res.experiments.index))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(FULL_WIDTH * 0.72, 3.6))
        fx = [point[e][1] for e in front]
        fy = [point[e][0] for e in front]
        ax.plot(fx, fy, "-", color="0.35", lw=1.2, zorder=1, label="fixed weights (front)")
        ax.scatter(fx, fy, color="0.35", s=22, zorder=2)
        for e in front:
            w = float(res.row(e)["w_cls"])
            ax.annotate(
                f"{w:g}", (point[e][1], point[e][0]), textcoords="offset points",
                xytext=(4, 4), fontsize=7, color="0.3",
            )  # fmt: skip
        fixed_points = {e: point[e] for e in front}
        for e in rivals:
            dominated = bool(dominated_by(point[e], fixed_points))
            ax.scatter(
                point[e][1], point[e][0], s=36, zorder=3, marker="D",
                facecolors="none" if dominated else colors[e], edgecolors=colors[e],
                linewidths=1.3, label=res.plain_label(e) + (" (dominated)" if dominated else ""),
            )  # fmt: skip
        ax.set_xlabel("test view accuracy")
        ax.set_ylabel("test mAP@0.5")
        ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        return save_figure(fig, out_stem)


def fig_alpha_sensitivity(res: Results, out_stem: PathLike) -> list[Path]:
    """Reference method vs alpha: test metrics (with intervals) and final task weights."""
    alphas, _ = res.reference_variants()
    if len(alphas) < 2:
        raise ValueError("fig_alpha_sensitivity: fewer than two alpha values ran")
    xs = [float(res.row(e)["alpha"]) for e in alphas]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH, 2.6))
        for i, metric in enumerate(("map50", "map50_95", "view_accuracy")):
            if any(res.has(e, metric) for e in alphas):
                _errorbar_series(
                    axes[0], res, alphas, xs, metric, PALETTE[2 * i], METRIC_LABELS[metric]
                )
        axes[0].set_xlabel("GradNorm α")
        axes[0].set_ylabel("test value (95% CI)")
        axes[0].set_xticks(xs)
        axes[0].legend(frameon=False, loc="best")
        for i, (col, name) in enumerate(
            (("weight_det_final", "final w_det"), ("weight_cls_final", "final w_cls"))
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
        axes[1].legend(frameon=False, loc="best")
        return save_figure(fig, out_stem)


def fig_augmentation(
    res: Results,
    out_stem: PathLike,
    metrics: Sequence[str] = ("map50", "map50_95", "precision", "recall", "view_accuracy"),
) -> list[Path]:
    """Reference method with augmentation off vs on, per metric (intervals where computed)."""
    _, aug = res.reference_variants()
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


def _pick_examples(images: list[dict], n: int, n_classes: int) -> list[dict]:
    """Deterministic choice: first image (by name) of each GT class in turn, then by name."""
    ordered = sorted(images, key=lambda im: im["name"])
    chosen: list[dict] = []
    for c in range(n_classes):
        for im in ordered:
            if im not in chosen and any(int(g[0]) == c for g in im.get("gt", [])):
                chosen.append(im)
                break
        if len(chosen) == n:
            return chosen
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
) -> list[Path]:
    """Test images with ground-truth (dashed) and predicted boxes, class, score and views.

    Images are read from their original files: ``records_csv`` (the records or splits table of
    the scheme the runs used, or all records under cross-validation) maps each predictions-JSON
    ``name`` to ``image_path`` (by file name). Predictions above the confidence threshold
    are drawn (at most ``max_boxes`` per image, highest score first); the threshold is
    ``conf_threshold``, else the best-F1 confidence of ``metrics_json``, else 0.25.
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
    colors = {i: PALETTE[(2 * i + 2) % 20] for i in range(len(class_names))}

    def view(i: int | None) -> str:
        if i is None:
            return "none"
        return view_names[i] if 0 <= i < len(view_names) else "missing"

    cols = min(len(chosen), 4)
    rows = math.ceil(len(chosen) / cols)
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, axes = plt.subplots(
            rows, cols, figsize=(FULL_WIDTH, FULL_WIDTH / cols * 0.8 * rows + 0.2), squeeze=False
        )
        for ax in axes.flat:
            ax.axis("off")
        for ax, im in zip(axes.flat, chosen, strict=False):
            if im["name"] not in paths:
                raise ValueError(f"{records_csv}: no image_path for test image {im['name']!r}")
            path = Path(paths[im["name"]])
            if not path.exists():
                raise ValueError(f"image file {path} (test image {im['name']!r}) does not exist")
            with Image.open(path) as pil:
                ax.imshow(np.asarray(pil.convert("RGB")))
            for c, x1, y1, x2, y2 in im.get("gt", []):
                ax.add_patch(
                    patches.Rectangle(
                        (x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", lw=1.4, ls="--"
                    )
                )
                ax.text(
                    x1,
                    y2 + 2,
                    f"GT {class_names[int(c)]}",
                    color="white",
                    fontsize=6.5,
                    va="top",
                    bbox={"fc": "black", "alpha": 0.5, "pad": 1, "lw": 0},
                )
            shown = sorted(
                (p for p in im.get("pred", []) if p[1] >= conf_threshold), key=lambda p: -p[1]
            )[:max_boxes]
            for c, score, x1, y1, x2, y2 in shown:
                col = colors[int(c)]
                ax.add_patch(
                    patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=col, lw=1.4)
                )
                ax.text(
                    x1,
                    y1 - 2,
                    f"{class_names[int(c)]} {score:.2f}",
                    color="black",
                    fontsize=6.5,
                    va="bottom",
                    bbox={"fc": col, "alpha": 0.85, "pad": 1, "lw": 0},
                )
            vt, vp = im.get("view_true"), im.get("view_pred")
            ok = vp is not None and vt == vp
            title = (
                f"view: true {view(vt)}, pred {view(vp)}"
                if vp is not None
                else f"view: true {view(vt)}"
            )
            ax.set_title(
                title,
                fontsize=7.5,
                color="black" if vp is None else ("darkgreen" if ok else "firebrick"),
            )
        fig.suptitle(
            f"dashed: ground truth; solid: predictions with score ≥ {conf_threshold:.2f}",
            fontsize=7.5,
        )
        return save_figure(fig, out_stem)


def fig_confusion_matrix(
    metrics_files: Sequence[PathLike] | PathLike, out_stem: PathLike
) -> list[Path]:
    """View confusion matrix (rows: true, columns: predicted), summed over the seeds given.

    Cells show the count and the row percentage.
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
    with plt.rc_context({**RC, "axes.grid": False}):
        fig, ax = plt.subplots(figsize=(3.3, 2.9))
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(total.shape[0]):
            for j in range(total.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{int(total[i, j])}\n{100 * frac[i, j]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if frac[i, j] > 0.55 else "black",
                )
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted view")
        ax.set_ylabel("true view")
        return save_figure(fig, out_stem)


def fig_per_class_ap(
    res: Results, out_stem: PathLike, groups: Sequence[str] | None = None, metric: str = "ap50"
) -> list[Path]:
    """Test AP@0.5 per detection class for every main-table group (mean over seeds)."""
    groups = list(groups) if groups is not None else res.main_groups()
    classes = res.class_names()
    if not classes:
        raise ValueError("fig_per_class_ap: no per-class AP in the results")
    exps = [res.chosen[g] for g in groups]
    colors = _colors(exps, list(res.experiments.index))
    width = 0.8 / len(exps)
    x = np.arange(len(classes))
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(FULL_WIDTH, 2.8))
        for k, exp in enumerate(exps):
            vals = [res.get(exp, f"{metric}/{c}") for c in classes]
            ax.bar(
                x - 0.4 + (k + 0.5) * width,
                vals,
                width,
                color=colors[exp],
                label=res.plain_label(exp),
            )
        ax.set_xticks(x, classes)
        ax.set_xlabel("regurgitation class")
        ax.set_ylabel("test AP@0.5" if metric == "ap50" else f"test {metric}")
        fig.legend(loc="outside right center", frameon=False)
        return save_figure(fig, out_stem)
