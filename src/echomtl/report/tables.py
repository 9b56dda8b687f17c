"""LaTeX tables (booktabs) for the paper, written as bare ``tabular`` environments.

The template wraps each file in a ``table`` float with a caption, so wording stays in the
template and numbers stay here. Cells are built as LaTeX strings (every text cell goes through
``latex_escape``; numbers through :func:`cell`) and rendered with pandas' ``Styler.to_latex``
(``hrules=True`` gives ``\\toprule``/``\\midrule``/``\\bottomrule``). Missing values print as
``--``; a value measured on one seed carries no spread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from echomtl.atomic import PathLike, write_text
from echomtl.evaluation.sharing import COST_READINGS
from echomtl.evaluation.vocabulary import (
    AXIS_METRICS,
    METRIC_LABELS,
    REPORTED_METRICS,
    TASK_METRICS,
    UNDECIDED,
    VERDICTS,
)
from echomtl.report.labels import POINT_WORDS, experiment_label
from echomtl.report.latex import (
    Tex,
    format_number,
    format_small,
    interval_digits,
    latex_escape,
    span,
)
from echomtl.report.queries import (
    SPLIT_WORDS,
    claims_rows,
    comparison_rows,
    dataset_counts,
    leakage_rows,
    load_claims,
    scheme_label,
    split_rows,
    time_unit,
)
from echomtl.report.results import Results
from echomtl.report.summaries import PHASES, diagnostics_by_configuration, weight_phases
from echomtl.study import GRID_SETTINGS

__all__ = [
    "DASH",
    "cell",
    "booktabs",
    "table_dataset",
    "table_leakage",
    "table_main",
    "table_weight_phases",
    "table_alpha",
    "table_augmentation",
    "table_dual_backbone",
    "table_traditional",
    "table_selection",
    "table_diagnostics",
    "table_claims",
    "table_verdicts",
    "table_sharing",
    "table_interference",
    "table_tuning",
    "table_cost",
]

DASH = Tex("--")
DIFF_HEADER = Tex("\\makecell{$\\Delta$ mAP@0.5\\\\reference $-$ row}")
VERDICT_SHORT = dict(zip(VERDICTS, ("higher", "lower", "n.d."), strict=True))


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def cell(value: float | None, digits: int = 3, std: float | None = None) -> Tex:
    """A number (``--`` when missing), with ``±std`` when a spread over seeds exists."""
    if _isnan(value):
        return DASH
    text = format_number(value, digits)
    if not _isnan(std):
        text = Tex(f"{text}$\\pm${format_number(std, digits)}")
    return text


def ci_cell(res: Results, experiment: str, metric: str, digits: int | None = None) -> Tex:
    """Seed mean (± std over seeds when several) and the pooled 95% bootstrap interval; the
    decimals follow the interval's width (:func:`~echomtl.report.latex.interval_digits`)."""
    value = res.get(experiment, metric)
    if _isnan(value):
        return DASH
    ci = res.interval(experiment, metric)
    if digits is None:
        digits = interval_digits(ci["low"], ci["high"]) if ci else 3
    text = cell(value, digits, res.std(experiment, metric))
    if ci is None:
        return text
    low, high = format_number(ci["low"], digits), format_number(ci["high"], digits)
    return Tex(f"\\makecell{{{text}\\\\{{\\scriptsize [{low}, {high}]}}}}")


def diff_cell(res: Results, other: str, metric: str, digits: int | None = None) -> Tex:
    """Paired difference reference - other with interval and short verdict, or ``--``."""
    if other == res.reference:
        return Tex("reference")
    pair = res.pair(other, metric)
    if pair is None:
        return DASH
    if digits is None:
        digits = interval_digits(pair["low"], pair["high"])
    d = format_number(pair["diff"], digits, signed=True)
    low = format_small(pair["low"], digits, signed=True)
    high = format_small(pair["high"], digits, signed=True)
    word = VERDICT_SHORT[pair["verdict"]]
    mdd = pair.get("mdd")
    if pair["verdict"] != pair.get("verdict_unadjusted", pair["verdict"]):
        # the interval excludes 0 but the family's adjustment does not let it decide
        word = "n.d. after Holm"
    elif word == "n.d." and mdd is not None and not _isnan(float(mdd)):
        # "not distinguishable" says what could have been seen, never "equal"
        word = f"n.d., MDD {format_number(float(mdd), 2)}"
    return Tex(f"\\makecell{{{d} ({word})\\\\{{\\scriptsize [{low}, {high}]}}}}")


def booktabs(
    frame: pd.DataFrame,
    column_format: str | None = None,
    midrule_before: Sequence[int] = (),
) -> str:
    """A booktabs ``tabular`` from a frame of LaTeX strings (headers are escaped here).

    ``midrule_before``: body row positions before which a ``\\midrule`` separates groups.
    """
    frame = frame.copy()
    frame.columns = [latex_escape(c) if not isinstance(c, Tex) else c for c in frame.columns]
    frame = frame.reset_index(drop=True)
    for col in frame.columns:
        frame[col] = [c if isinstance(c, Tex) else latex_escape(c) for c in frame[col]]
    fmt = column_format or ("l" + "r" * (frame.shape[1] - 1))
    text = frame.style.hide(axis="index").to_latex(hrules=True, column_format=fmt)
    if midrule_before:
        lines = text.splitlines()
        start = lines.index("\\midrule") + 1
        for offset, pos in enumerate(sorted(set(midrule_before))):
            if 0 < pos < len(frame):
                lines.insert(start + pos + offset, "\\midrule")
        text = "\n".join(lines) + "\n"
    return text


def _write(frame: pd.DataFrame, out_tex: PathLike, **kwargs: Any) -> Path:
    text = "% Generated by echomtl.report.tables: do not edit.\n" + booktabs(frame, **kwargs)
    return write_text(out_tex, text)


def table_dataset(audits: Mapping[str, PathLike | dict], out_tex: PathLike) -> Path:
    """Dataset table: per split scheme and split, images/patients/videos, boxes per class and
    images per view (``audits``: ``{scheme label: audit.json path or dict}``)."""
    frame, _ = dataset_counts(audits)
    frame["Scheme"] = frame["Scheme"].map(scheme_label)
    frame["Split"] = frame["Split"].map(lambda s: SPLIT_WORDS.get(s, s))
    frame = frame.rename(columns=lambda c: c.removeprefix("view:"))
    cells = frame.astype(object).map(lambda v: Tex(str(v)) if isinstance(v, int) else v)
    scheme_change = [
        i for i in range(1, len(frame)) if frame["Scheme"][i] != frame["Scheme"][i - 1]
    ]
    return _write(
        cells,
        out_tex,
        column_format="ll" + "r" * (frame.shape[1] - 2),
        midrule_before=scheme_change,
    )


def table_leakage(audits: Mapping[str, PathLike | dict], out_tex: PathLike) -> Path:
    """Leakage table: for each evaluation split, how much of it also appears in train."""
    frame = leakage_rows(audits)
    if frame.empty:
        raise ValueError("no evaluation split in the audits: nothing to measure leakage on")

    def frac(n: int, total: int) -> Tex:
        pct = format_number(100.0 * n / total, 1) if total else DASH
        return Tex(f"{n}/{total} ({pct}\\%)") if total else DASH

    def pairs(a: str, b: str) -> list[Tex]:
        return [frac(int(x), int(y)) for x, y in zip(frame[a], frame[b], strict=True)]

    head = {
        "videos": Tex("\\makecell{Videos\\\\also in train}"),
        "patients": Tex("\\makecell{Patients\\\\also in train}"),
        "img_v": Tex("\\makecell{Images from\\\\train videos}"),
        "img_p": Tex("\\makecell{Images from\\\\train patients}"),
        "dup": Tex("\\makecell{Byte-identical to\\\\a train image}"),
    }
    cells = pd.DataFrame(
        {
            "Scheme": frame["scheme"].map(scheme_label),
            "Split": frame["split"].map(lambda s: SPLIT_WORDS.get(s, s)),
            head["videos"]: pairs("n_videos_in_train", "n_videos"),
            head["patients"]: pairs("n_patients_in_train", "n_patients"),
            head["img_v"]: pairs("n_images_from_train_videos", "n_images"),
            head["img_p"]: pairs("n_images_from_train_patients", "n_images"),
            head["dup"]: [Tex(str(int(n))) for n in frame.n_images_identical_to_train],
        }
    )
    change = [i for i in range(1, len(frame)) if frame["scheme"][i] != frame["scheme"][i - 1]]
    return _write(cells, out_tex, column_format="llrrrrr", midrule_before=change)


def _seeds_cell(res: Results, exp: str) -> Tex:
    """Seeds with a test value, on whichever task the model has (a view classifier alone has
    no mAP@0.5, a detector alone no view accuracy)."""
    return Tex(str(max(res.n_seeds(exp, m) for m in REPORTED_METRICS)))


def table_main(res: Results, out_tex: PathLike, groups: Sequence[str] | None = None) -> Path:
    """Main results on test: one row per group (its validation-chosen experiment)."""
    groups = list(groups) if groups is not None else res.study.main_groups
    if not groups:
        raise ValueError("table_main: no group has results")
    ref_label = res.label(res.reference)
    folds = res.n_folds()
    several_seeds = len(res.seeds()) > 1  # one seed: the caption says so, no column of 1s
    rows = []
    for g in groups:
        exp = res.chosen[g]
        row: dict[Any, Any] = {"Method": res.group_label(g)}
        if several_seeds:
            row["Seeds"] = _seeds_cell(res, exp)
        row[METRIC_LABELS["map50"]] = ci_cell(res, exp, "map50")
        if folds:
            row[Tex("\\makecell{mAP@0.5\\\\per fold}")] = fold_range_cell(res, exp, "map50")
        row[METRIC_LABELS["map50_95"]] = ci_cell(res, exp, "map50_95")
        row[METRIC_LABELS["view_accuracy"]] = ci_cell(res, exp, "view_accuracy")
        if folds:
            row[Tex("\\makecell{View acc.\\\\per fold}")] = fold_range_cell(
                res, exp, "view_accuracy"
            )
        row[Tex("\\makecell{View\\\\macro-F1}")] = ci_cell(res, exp, "view_macro_f1")
        row[Tex(f"\\makecell{{$\\Delta$ mAP@0.5\\\\{ref_label} $-$ row}}")] = diff_cell(
            res, exp, "map50"
        )
        rows.append(row)
    return _write(pd.DataFrame(rows), out_tex, column_format="l" + "c" * (len(rows[0]) - 1))


def fold_range_cell(res: Results, experiment: str, metric: str) -> Tex:
    """Per-fold spread of a pooled cross-validated value: lowest--highest fold, and the
    standard deviation over folds (a dash when not measured)."""
    values = [v for v in res.fold_values(experiment, metric) if not math.isnan(v)]
    if not values:
        return DASH
    sd = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else math.nan
    spread = span(cell(min(values)), cell(max(values)))
    if math.isnan(sd):
        return Tex(spread)
    return Tex(f"\\makecell{{{spread}\\\\{{\\scriptsize SD {cell(sd)}}}}}")


def table_weight_phases(
    steps_files: Mapping[tuple[str, int], PathLike] | Iterable[PathLike],
    out_tex: PathLike,
    phases: tuple[tuple[str, float, float], ...] = PHASES,
) -> Path:
    """Weight evolution by training phase of one experiment (the reference's ``steps.csv``)."""
    frame = weight_phases(steps_files, phases)

    def steps(r: pd.Series) -> Tex:
        if r["end"] <= r["start"]:
            return Tex(f"first step ({int(r['first_step'])})")
        return Tex(
            f"{span(format_number(100 * r['start'], 0), format_number(100 * r['end'], 0))}\\% "
            f"({span(str(int(r['first_step'])), str(int(r['last_step'])))})"
        )

    cells = pd.DataFrame(
        {
            "Phase": frame["phase"],
            "Steps (share, range)": [steps(r) for _, r in frame.iterrows()],
            Tex("$w_\\mathrm{det}$"): [cell(v) for v in frame["weight_det"]],
            Tex("$w_\\mathrm{cls}$"): [cell(v) for v in frame["weight_cls"]],
            Tex("$w_\\mathrm{det}/w_\\mathrm{cls}$"): [cell(v, 1) for v in frame["ratio"]],
            Tex("$L_\\mathrm{det}$"): [cell(v) for v in frame["loss_det"]],
            Tex("$L_\\mathrm{cls}$"): [cell(v) for v in frame["loss_cls"]],
        }
    )
    return _write(cells, out_tex, column_format="llrrrrr")


def table_alpha(res: Results, out_tex: PathLike) -> Path:
    """Alpha ablation of the reference method: final weights and test metrics per alpha."""
    alphas = res.study.alpha_variants
    if len(alphas) < 2:
        raise ValueError("table_alpha: fewer than two alpha values of the reference method ran")
    rows = []
    for exp in alphas:
        rows.append(
            {
                Tex("$\\alpha$"): Tex(f"{res.row(exp)['alpha']:g}"),
                Tex("final $w_\\mathrm{det}$"): cell(res.get(exp, "weight_det_final", "train")),
                Tex("final $w_\\mathrm{cls}$"): cell(res.get(exp, "weight_cls_final", "train")),
                METRIC_LABELS["map50"]: ci_cell(res, exp, "map50"),
                METRIC_LABELS["map50_95"]: ci_cell(res, exp, "map50_95"),
                METRIC_LABELS["view_accuracy"]: ci_cell(res, exp, "view_accuracy"),
                DIFF_HEADER: diff_cell(res, exp, "map50"),
            }
        )
    return _write(pd.DataFrame(rows), out_tex, column_format="crrcccc")


def table_augmentation(res: Results, out_tex: PathLike) -> Path:
    """Augmentation on/off for the reference method."""
    aug = res.study.augmentation_variant
    if aug is None:
        raise ValueError("table_augmentation: no augmentation variant of the reference ran")
    rows = []
    for exp in (res.reference, aug):
        rows.append(
            {
                "Augmentation": "on" if res.row(exp)["augment"] else "off",
                METRIC_LABELS["map50"]: ci_cell(res, exp, "map50"),
                METRIC_LABELS["precision"]: cell(
                    res.get(exp, "precision"), 3, res.std(exp, "precision")
                ),
                METRIC_LABELS["recall"]: cell(res.get(exp, "recall"), 3, res.std(exp, "recall")),
                METRIC_LABELS["view_accuracy"]: ci_cell(res, exp, "view_accuracy"),
                DIFF_HEADER: diff_cell(res, exp, "map50"),
            }
        )
    return _write(pd.DataFrame(rows), out_tex, column_format="lcrrcc")


def table_dual_backbone(
    res: Results, out_tex: PathLike, experiments: Sequence[str] | None = None
) -> Path:
    """Reference vs the controls (dual backbone, stop-gradient head, detection only, when run):
    size, time, test metrics."""
    if experiments is None:
        experiments = [res.reference] + [
            e
            for e in res.experiments.index
            if res.row(e)["model"] in ("dual_backbone", "stopgrad", "det_only") and res.ran(e)
        ]
    if len(experiments) < 2:
        raise ValueError("table_dual_backbone: no dual-backbone experiment ran")
    unit, scale = time_unit(res.get(e, "train_seconds", "train") for e in experiments)
    rows = []
    for exp in experiments:
        params = res.get(exp, "n_parameters", "model")
        rows.append(
            {
                "Method": res.label(exp),
                "Parameters (M)": cell(params / 1e6, 2) if not _isnan(params) else DASH,
                f"Training time ({unit})": cell(
                    res.get(exp, "train_seconds", "train") / scale,
                    1,
                    res.std(exp, "train_seconds", "train") / scale,
                ),
                METRIC_LABELS["map50"]: ci_cell(res, exp, "map50"),
                METRIC_LABELS["view_accuracy"]: ci_cell(res, exp, "view_accuracy"),
            }
        )
    return _write(pd.DataFrame(rows), out_tex, column_format="lrrcc")


def start_weight_cell(res: Results, experiment: str) -> Tex:
    """The starting w_cls; for a per-fold selection, the value each fold chose (fold order)."""
    choices = res.fold_choices(experiment)
    if choices:
        return Tex("/".join(f"{float(res.row(c)['w_cls']):g}" for c in choices) + " (per fold)")
    return cell(res.row(experiment)["w_cls"], 2)


def table_traditional(res: Results, out_tex: PathLike, groups: Sequence[str] | None = None) -> Path:
    """Fixed weights vs the manually tuned weights vs the reference."""
    if groups is None:
        groups = [
            g
            for g in res.study.groups
            if res.row(res.chosen[g])["method"] == "fixed"
            and res.row(res.chosen[g])["model"] == "multitask"
        ]
        groups.append(res.row(res.reference)["group"])
    if len(groups) < 2:
        raise ValueError("table_traditional: no fixed-weight multitask experiment ran")
    rows = []
    for g in groups:
        exp = res.chosen[g]
        rows.append(
            {
                "Method": res.group_label(g),
                Tex("$w_\\mathrm{cls}$ (start)"): start_weight_cell(res, exp),
                Tex("final $L_\\mathrm{det}$ (train)"): cell(
                    res.get(exp, "loss_det_final", "train"),
                    3,
                    res.std(exp, "loss_det_final", "train"),
                ),
                METRIC_LABELS["map50"]: ci_cell(res, exp, "map50"),
                METRIC_LABELS["view_accuracy"]: ci_cell(res, exp, "view_accuracy"),
                DIFF_HEADER: diff_cell(res, exp, "map50"),
            }
        )
    return _write(pd.DataFrame(rows), out_tex, column_format="lrrccc")


#: The start of a run in words (experiments column ``init``).
INIT_WORDS = {"scratch": "random weights", "pretrained": "COCO checkpoint"}


def table_init(res: Results, out_tex: PathLike) -> Path:
    """The init axis: each configuration that ran from both starts, on the same test images,
    one row per start (the study's first), with 95% intervals."""
    pairs = res.study.init_pairs
    if not pairs:
        raise ValueError("table_init: no configuration ran from both starts")
    rows = []
    for pair in pairs:
        for exp in pair:
            row: dict[Any, Any] = {
                "Method": experiment_label(res.experiments, pair[0]),
                "Start": INIT_WORDS[str(res.row(exp)["init"])],
            }
            for m in AXIS_METRICS:
                show = res.has_classifier(exp) or m != "view_accuracy"
                row[METRIC_LABELS[m]] = ci_cell(res, exp, m) if show else DASH
            rows.append(row)
    change = list(range(2, len(rows), 2))
    return _write(pd.DataFrame(rows), out_tex, column_format="llccc", midrule_before=change)


def table_split(res: Results, audits: Mapping[str, PathLike | dict], out_tex: PathLike) -> Path:
    """The split axis: one method on the export's split and on the patient-grouped split, on
    each evaluation split, beside how many of those images come from training videos."""
    rows = split_rows(res, audits)
    if not rows:
        raise ValueError("table_split: no split variant ran beside its study run")
    cells = pd.DataFrame(
        {
            "Method": [res.label(r["pair"]) for r in rows],
            "Scheme": [scheme_label(r["scheme"]) for r in rows],
            "Evaluated on": [SPLIT_WORDS.get(r["split"], r["split"]) for r in rows],
            Tex("\\makecell{Images from\\\\train videos}"): [
                Tex(
                    f"{r['n_from_train_videos']}/{r['n_images']} "
                    f"({format_number(100.0 * r['n_from_train_videos'] / r['n_images'], 1)}\\%)"
                )
                for r in rows
            ],
            **{
                METRIC_LABELS[m]: [
                    cell(r[m])
                    if res.has_classifier(r["experiment"]) or m != "view_accuracy"
                    else DASH
                    for r in rows
                ]
                for m in AXIS_METRICS
            },
        }
    )
    change = [i for i in range(1, len(rows)) if rows[i]["pair"] != rows[i - 1]["pair"]]
    return _write(cells, out_tex, column_format="lllrccc", midrule_before=change)


def table_selection(res: Results, group: str, out_tex: PathLike) -> Path:
    """The grid of a multi-row group and its validation scores (chosen row marked)."""
    sel = res.selections.get(group)
    if sel is None:
        raise ValueError(f"table_selection: no selection.json for group {group!r}")
    varying = [c for c in sel["varying"]] or ["w_cls"]
    per_fold = sel.get("per_fold")
    names = {"w_cls": "$w_\\mathrm{cls}$", "w_det": "$w_\\mathrm{det}$", "alpha": "$\\alpha$"}
    rows = []
    for cand in sel["candidates"]:
        row: dict[Any, Any] = {}
        for c in varying:
            value = cand.get(c)
            row[Tex(names.get(c, latex_escape(c)))] = (
                Tex(f"{value:g}")
                if isinstance(value, int | float) and not isinstance(value, bool)
                else str(value)
            )
        row["Val. mAP@0.5"] = cell(cand["map50"])
        row["Val. view accuracy"] = cell(cand["view_accuracy"])
        row["Score"] = cell(cand["score"])
        if per_fold:  # cross-validation: means over folds, and the folds that chose the row
            row["Chosen in folds"] = Tex(
                ", ".join(str(f["fold"] + 1) for f in per_fold if f["chosen"] == cand["experiment"])
                or DASH
            )
        else:
            row["Chosen"] = Tex("$\\checkmark$") if cand["experiment"] == sel["chosen"] else Tex("")
        rows.append(row)
    return _write(pd.DataFrame(rows), out_tex, column_format="r" * len(varying) + "rrrc")


# ---- claimed vs reproduced ----------------------------------------------------------------
def _digits_for(value: float, digits: int) -> int:
    """``digits`` decimals, more (up to 4) when the value would show fewer than 2 significant."""
    if _isnan(value) or value == 0:
        return digits
    while digits < 4 and abs(value) < 10 ** (1 - digits):
        digits += 1
    return digits


#: words for the tidy table's training and model quantities (the claims table's sources)
QUANTITY_WORDS = {
    "loss_det_initial": "detection loss, first logged steps",
    "loss_det_final": "detection loss, last logged steps",
    "loss_det_change_pct": "change of the detection loss",
    "loss_cls_initial": "classification loss, first logged steps",
    "loss_cls_final": "classification loss, last logged steps",
    "loss_cls_change_pct": "change of the classification loss",
    "weight_det_initial": "detection weight, first step",
    "weight_det_final": "detection weight, last step",
    "weight_cls_initial": "classification weight, first step",
    "weight_cls_final": "classification weight, last step",
    "train_seconds": "training time (wall clock)",
    "n_parameters": "parameter count",
}


def source_words(split: str, metric: str) -> Tex:
    """Where a reproduced number comes from, in words (never a tidy-table key)."""
    if metric in METRIC_LABELS:
        return Tex(f"{SPLIT_WORDS.get(split, split)} {latex_escape(METRIC_LABELS[metric])}")
    if metric not in QUANTITY_WORDS:
        raise ValueError(f"claims table: no words for the quantity {metric!r} (QUANTITY_WORDS)")
    return Tex(QUANTITY_WORDS[metric])


def _comparison_cells(r: dict) -> tuple[Tex, Tex, Tex]:
    """Claimed, reproduced and our source of a comparison row (see queries.comparison_rows)."""
    if r["kind"] == "ratio":
        claimed = Tex(format_number(r["claimed"], 2) + "$\\times$")
        ours = (
            Tex(format_number(r["measured"], 2) + "$\\times$")
            if r["status"] == "measured"
            else Tex(f"({r['status']})")
        )
        return claimed, ours, Tex("ratio of the seed means")
    digits = interval_digits(r["low"], r["high"])
    claimed = format_number(r["claimed"], 3, signed=True)
    if r["status"] != "measured":
        return claimed, Tex(f"({r['status']})"), DASH
    low, high = (format_number(r[k], digits, signed=True) for k in ("low", "high"))
    ours = Tex(f"\\makecell[r]{{{format_number(r['measured'], digits, signed=True)}\\\\"
               f"{{\\scriptsize [{low}, {high}]}}}}")  # fmt: skip
    metric = latex_escape(METRIC_LABELS.get(r["metric"], r["metric"]))
    return claimed, ours, Tex(f"paired bootstrap of test {metric}, 95\\% interval")


def table_claims(claims_yaml: PathLike, res: Results, out_tex: PathLike) -> Path:
    """Claimed (seed guide) vs reproduced (this workflow), each row with both sources; then the
    guide's decisive differences (with the measured paired interval) and its hardware-bound
    quantities as ratios."""
    claims = load_claims(claims_yaml)
    rows = []
    for r in claims_rows(claims, res):
        if r["compare"] == "ratio":
            ours, src = Tex("(as a ratio, below)"), DASH
        elif r["status"] == "measured":
            digits = _digits_for(r["measured"], r["digits"])
            ci = res.interval(r["experiment"], r["metric"]) if r["split"] == "test" else None
            if ci is not None:  # a test metric: as many decimals as its interval supports
                digits = interval_digits(ci["low"], ci["high"])
            ours = Tex(format_number(r["measured"], digits) + r["suffix"])
            src = Tex(f"{res.label(r['experiment'])}: {source_words(r['split'], r['metric'])}")
        else:
            ours, src = Tex(f"({r['status']})"), DASH
        quantity = latex_escape(r["quantity"])
        if r["note"]:
            quantity = Tex(f"{quantity}\\newline{{\\scriptsize {latex_escape(r['note'])}}}")
        rows.append(
            {
                "Quantity": quantity,
                "Claimed": Tex(format_number(r["claimed"], r["digits"]) + r["suffix"]),
                "Reproduced": ours,
                "Claim source (guide)": latex_escape(r["where"]),
                "Our source": src,
            }
        )
    first_comparison = len(rows)
    for r in comparison_rows(claims, res):
        claimed, ours, src = _comparison_cells(r)
        rows.append(
            {
                "Quantity": latex_escape(r["quantity"]),
                "Claimed": claimed,
                "Reproduced": ours,
                "Claim source (guide)": Tex(
                    "difference of two rows above" if r["kind"] == "difference"
                    else "ratio of two rows above"
                ),
                "Our source": src,
            }
        )  # fmt: skip
    rag = r">{\raggedright\arraybackslash}"
    fmt = rf"{rag}p{{0.31\linewidth}}rr{rag}p{{0.25\linewidth}}{rag}p{{0.23\linewidth}}"
    change = [first_comparison] if first_comparison < len(rows) else []
    return _write(pd.DataFrame(rows), out_tex, column_format=fmt, midrule_before=change)


def table_diagnostics(
    diagnostics: pd.DataFrame,
    experiments: pd.DataFrame,
    out_tex: PathLike,
    scopes: Sequence[str] = ("W", "trunk"),
) -> Path:
    """Gradient interference per shared-trunk experiment (``summaries.diagnostics_summary``).

    Per scope: median cosine between the task gradients, the median null-reference cosine (two
    half-batch detection gradients), the share of logged steps with a negative cosine, and the
    median WEIGHTED norm ratio ``e_det ||g_det|| / (e_cls ||g_cls||)`` of the applied update
    (means over seeds).
    """
    if diagnostics.empty:
        raise ValueError("table_diagnostics: no diagnostics rows (no shared-trunk run?)")
    agg = diagnostics_by_configuration(diagnostics)
    names = {"W": "$W$", "trunk": "trunk", "feature": "feature"}
    rows = []
    for exp in [e for e in experiments.index if e in agg.index.get_level_values(0)]:
        row: dict[Any, Any] = {"Method": experiment_label(experiments, exp)}
        for scope in scopes:
            s = names.get(scope, latex_escape(scope))
            if (exp, scope) not in agg.index:
                raise ValueError(f"table_diagnostics: no {scope!r} rows for {exp!r}")
            r = agg.loc[(exp, scope)]
            # one precision per column (three decimals: the medians sit near zero)
            row[Tex(f"\\makecell{{median cos\\\\({s})}}")] = format_number(r["median_cosine"], 3)
            row[Tex(f"\\makecell{{null cos\\\\({s})}}")] = format_number(r["null"], 3)
            row[Tex(f"\\makecell{{cos $<0$\\\\({s})}}")] = Tex(
                format_number(r["frac_negative"], 0, percent=True)
            )
            row[Tex(f"\\makecell{{weighted\\\\norm ratio\\\\({s})}}")] = cell(10 ** r["wratio"], 1)
        rows.append(row)
    return _write(pd.DataFrame(rows), out_tex, column_format="l" + "r" * 4 * len(scopes))


def table_verdicts(res: Results, out_tex: PathLike) -> Path:
    """Every paired verdict the statistics hold (``Results.verdicts``), per metric: how often the
    reference was higher, lower or not distinguishable, and what the undecided could detect."""
    cells = []
    for m, by in res.verdicts.items():
        if not sum(map(len, by.values())):
            continue
        mdds = res.undecided_mdds(m)
        mdd = DASH if not mdds else Tex(f"{format_number(min(mdds), 2)}--"
                                        f"{format_number(max(mdds), 2)}")  # fmt: skip
        cells.append(
            {
                "Metric": latex_escape(METRIC_LABELS[m]),
                "Compared": Tex(str(sum(map(len, by.values())))),
                "Reference higher": Tex(str(len(by["higher"]))),
                "Reference lower": Tex(str(len(by["lower"]))),
                "Not distinguishable": Tex(str(len(by[UNDECIDED]))),
                Tex("\\makecell{MDD of the not\\\\distinguishable}"): mdd,
            }
        )
    if not cells:
        raise ValueError("table_verdicts: no paired comparison with the reference")
    return _write(pd.DataFrame(cells), out_tex, column_format="lrrrrc")


def _estimate_cell(entry: Mapping[str, Any] | None, key: str, digits: int, signed: bool) -> Tex:
    """``value [low, high]`` of a difference or fraction at ``digits`` decimals, or ``--``."""
    if entry is None or _isnan(entry.get(key)):
        return DASH
    value = format_number(entry[key], digits, signed=signed)
    low = format_small(entry["low"], digits, signed=signed)
    high = format_small(entry["high"], digits, signed=signed)
    return Tex(f"\\makecell{{{value}\\\\{{\\scriptsize [{low}, {high}]}}}}")


#: the cost row's reading in the table: what it leaves for a method to recover
COST_WORDS = {
    COST_READINGS["higher"]: "sharing costs this task",
    COST_READINGS["lower"]: "sharing helps: nothing to recover",
    COST_READINGS[UNDECIDED]: "no measurable cost: nothing to recover",
}
SHARING_DIFF = Tex("\\makecell{Difference\\\\{}[95\\% interval]}")
SHARING_FRACTION = Tex("\\makecell{Fraction of the\\\\cost recovered}")


def table_sharing(res: Results, out_tex: PathLike) -> Path:
    """The paper's question in order, per task: what sharing the trunk costs (single-task
    reference - fixed weights), then each shared-trunk method's gain over fixed weights and the
    fraction of the cost it recovers (printed only where the cost is measurable). One precision
    per task block: the widest interval's (:func:`interval_digits`)."""
    if res.sharing is None:
        raise ValueError("table_sharing: the study has no cost-of-sharing file")
    methods = res.recovery_rows()
    shared = res.label(res.sharing["shared"])
    rows, breaks = [], []
    for metric in TASK_METRICS:
        part = res.sharing["metrics"][metric]
        cost = part["cost"]
        entries = [cost, *(part["methods"][m]["gain"] for m in methods)]
        digits = min(interval_digits(e["low"], e["high"]) for e in entries if e["low"] is not None)
        breaks.append(len(rows))
        rows.append({
            "Task": METRIC_LABELS[metric],
            "Difference": Tex(f"cost: {res.label(part['isolated'])} $-$ {shared}"),
            SHARING_DIFF: _estimate_cell(cost, "diff", digits, True),
            SHARING_FRACTION: DASH,
            "Reading": COST_WORDS.get(cost["reading"], "--"),
        })  # fmt: skip
        for m in methods:
            gain, fraction = part["methods"][m]["gain"], part["methods"][m]["fraction"]
            rows.append({
                "Task": "",
                "Difference": Tex(f"gain: {res.label(m)} $-$ {shared}"),
                SHARING_DIFF: _estimate_cell(gain, "diff", digits, True),
                SHARING_FRACTION: _estimate_cell(fraction, "point", 2, False),
                "Reading": fraction["reading"] if fraction else "--",
            })  # fmt: skip
    changes = res.sharing.get("delta_m", {})
    runs = [r for r in [res.sharing["shared"], *methods] if (changes.get(r) or {}).get("point")
            is not None]  # fmt: skip
    if runs:  # Δm in percent: both tasks against their single-task runs
        breaks.append(len(rows))
        for i, run in enumerate(runs):
            rows.append({
                "Task": Tex("both ($\\Delta_m$, \\%)") if i == 0 else "",
                "Difference": Tex(f"$\\Delta_m$: {res.label(run)}"),
                SHARING_DIFF: _estimate_cell(changes[run], "point", 1, True),
                SHARING_FRACTION: DASH,
                "Reading": changes[run]["reading"],
            })  # fmt: skip
    return _write(pd.DataFrame(rows), out_tex, column_format="llccl", midrule_before=breaks[1:])


def table_interference(
    files: Iterable[PathLike], experiments: pd.DataFrame, out_tex: PathLike
) -> Path:
    """The accumulated-gradient interference (``evaluation.interference``): per run and snapshot
    point, the task cosine against its null band, the reading, the weighted-norm ratio and each
    task's cosine between two halves of the image set (its reproducibility)."""
    from echomtl.atomic import read_json

    rows, breaks = [], []
    for path in files:
        r = read_json(path)
        breaks.append(len(rows))
        for i, (point, m) in enumerate(r["points"].items()):
            rows.append({
                "Configuration": experiment_label(experiments, r["experiment"]) if i == 0 else "",
                "Point (step)": f"{POINT_WORDS[point]} ({m['step']})",
                Tex("Task cosine"): format_small(m["cosine"], 3, signed=True),
                Tex("Null band"): Tex(f"$\\pm${format_small(m['null_high'], 3)}"),
                "Reading": m["reading"] or "--",
                Tex("\\makecell{Weighted\\\\norm ratio}"): cell(m["weighted_norm_ratio"], 1),
                Tex("\\makecell{Halves:\\\\det., cls.}"): Tex(
                    f"{format_number(m['halves_det'], 2)}, {format_number(m['halves_cls'], 2)}"
                ),
            })  # fmt: skip
    if not rows:
        raise ValueError("table_interference: no accumulated-gradient measurement")
    return _write(pd.DataFrame(rows), out_tex, column_format="llrrlrr", midrule_before=breaks[1:])


#: how a setting of the experiments table reads in the tuning-budget table
SETTING_WORDS = {"w_det": "$w_\\mathrm{det}$", "w_cls": "$w_\\mathrm{cls}$", "alpha": "$\\alpha$"}


def table_tuning(res: Results, out_tex: PathLike) -> Path:
    """The tuning budget of every method of the main table: the settings chosen on validation
    and how many configurations that choice saw, the settings fixed in advance, and the seeds.
    Unequal budgets make most reported multi-task gains (Xin et al. 2022): the table says each."""
    study = res.study
    rows = []
    for g in study.main_groups:
        members = study.members(g)
        first = study.row(members[0])
        table = study.table.loc[members]
        tuned = [c for c in GRID_SETTINGS if table[c].astype(str).nunique() > 1]
        fixed = [
            f"{SETTING_WORDS[c]}\\,=\\,{float(first[c]):g}"
            for c in GRID_SETTINGS
            if c not in tuned and not _isnan(first[c])
            and not (c == "w_det" and str(first["model"]) == "view_only")
            and not (c == "w_cls" and str(first["model"]) == "det_only")
        ]  # fmt: skip
        alpha_row = str(first["method"]) == "gradnorm" and len(study.alpha_variants) > 1
        if alpha_row and not tuned:
            fixed.append("($\\alpha$ chosen on validation: next row)" if res.alpha_chosen
                         else "(other $\\alpha$ values: an ablation, not a choice)")  # fmt: skip
        rows.append({
            "Method": res.group_label(g),
            "Chosen on validation": Tex(", ".join(SETTING_WORDS[c] for c in tuned)) if tuned
            else "nothing",
            "Configurations": str(len(members)),
            "Fixed in advance": Tex(", ".join(fixed)) if fixed else "--",
            "Seeds": str(len(study.seeds_of(res.chosen.get(g, members[0]), res.chosen))),
        })  # fmt: skip
        if alpha_row and res.alpha_chosen and g == study.row(study.reference)["group"]:
            # GradNorm tuned as the grid is: alpha chosen on validation (Study.choices)
            kept = [f for f in fixed if "alpha" not in f and "ablation" not in f]
            rows.append({
                "Method": Tex(f"{res.label(res.alpha_chosen)}$^\\dagger$"),
                "Chosen on validation": Tex(SETTING_WORDS["alpha"]),
                "Configurations": str(len(study.alpha_variants)),
                "Fixed in advance": Tex(", ".join(kept)) if kept else "--",
                "Seeds": str(len(study.seeds_of(res.alpha_chosen))),
            })  # fmt: skip
    wrap = r">{\raggedright\arraybackslash}p"  # long cells wrap inside the text width
    return _write(pd.DataFrame(rows), out_tex, column_format=f"l{wrap}{{2.3cm}}r{wrap}{{5.4cm}}r")


#: The cost metrics (tidy ``train`` rows of :func:`echomtl.evaluation.tidy._cost_rows`) and
#: their column headers, in table order.
COST_COLUMNS = {
    "seconds_per_step": Tex("\\makecell{Seconds per\\\\optimizer step}"),
    "peak_rss_mib": Tex("\\makecell{Peak RSS\\\\(MiB)}"),
    "cuda_peak_mib": Tex("\\makecell{Peak CUDA\\\\allocated (MiB)}"),
}


def cost_runs(res: Results, experiment: str) -> list[str]:
    """The trained runs whose cost stands for a row: the row itself, or for a per-fold
    selection the configurations its folds chose (the same method at other weights)."""
    return res.fold_choices(experiment) or [experiment]


def cost_value(res: Results, experiment: str, metric: str) -> tuple[float, float]:
    """Mean over seeds (and over the chosen configurations of a per-fold selection) and the
    SD over seeds of one row's cost; NaN when its runs did not measure it."""
    runs = [e for e in cost_runs(res, experiment) if res.has(e, metric, "train")]
    if not runs:
        return math.nan, math.nan
    means = [res.get(e, metric, "train") for e in runs]
    stds = [res.std(e, metric, "train") for e in runs]
    return float(sum(means) / len(means)), (stds[0] if len(runs) == 1 else math.nan)


def table_cost(res: Results, out_tex: PathLike, groups: Sequence[str] | None = None) -> Path:
    """What each method of the main table cost to train, beside its accuracy: wall seconds per
    optimizer step and peak memory as the training process measured them (mean over seeds,
    ± SD), and test mAP@0.5 and view accuracy. CUDA's column appears when a run used CUDA; a
    run that did not measure its cost (trained before it was recorded) shows a dash."""
    groups = list(groups) if groups is not None else res.study.main_groups
    chosen = [res.chosen[g] for g in groups]
    metrics = [
        m
        for m in COST_COLUMNS
        if m != "cuda_peak_mib" or any(not _isnan(cost_value(res, e, m)[0]) for e in chosen)
    ]
    rows = []
    for g, exp in zip(groups, chosen, strict=True):
        row: dict[Any, Any] = {"Method": res.group_label(g)}
        for m in metrics:
            value, std = cost_value(res, exp, m)
            digits = 3 if m == "seconds_per_step" else 0
            row[COST_COLUMNS[m]] = cell(value, digits, std)
        row[METRIC_LABELS["map50"]] = cell(res.get(exp, "map50"), 3, res.std(exp, "map50"))
        row[METRIC_LABELS["view_accuracy"]] = cell(
            res.get(exp, "view_accuracy"), 3, res.std(exp, "view_accuracy")
        )
        rows.append(row)
    if not rows:
        raise ValueError("table_cost: no group has results")
    return _write(pd.DataFrame(rows), out_tex, column_format="l" + "r" * (len(rows[0]) - 1))
