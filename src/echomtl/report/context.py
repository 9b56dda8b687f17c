"""The paper's context: every value, flag and comparative word the template needs.

:func:`build_context` reads only :class:`~echomtl.report.results.Results`, the data audits, the
workflow config, the claims file and the paths of the generated tables/figures. It returns a
dict for :func:`echomtl.report.latex.render_paper`; ``context["numbers"]`` is what
:func:`echomtl.report.latex.write_numbers` writes to ``numbers.tex``.

Number keys (``numbers.tex`` comments show them): ``test/<exp>/<metric>`` (seed mean),
``.../std``, ``ci/<exp>/<metric>/low|high`` (bootstrap), ``diff/<exp>/<metric>[/low|/high]``
(reference - exp, paired), ``train/<exp>/<metric>``, ``model/<exp>/params_m``,
``time/<exp>``, ``valid/<exp>/score``, ``data/...``, ``leak/...``, ``cfg/...``, ``diag/...``,
``phase/...``, ``claim/<id>``, ``count/...``.

Template helpers (callables in the context, each failing on a missing result):
``val(exp, metric, split="test")``, ``ci(exp, metric)`` -> ``[low, high]``,
``diff(exp, metric)`` -> signed difference with interval, ``cmp(exp, metric)`` -> "higher than" |
"lower than" | "not distinguishable at 95% from" (the reference's side), ``verdict(exp, metric)``,
``label(exp)``, ``listing(items)`` -> "a, b and c".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from echomtl.data.splits import cv_fold_of
from echomtl.report._io import PathLike
from echomtl.report.aggregate import (
    LOSS_WINDOW,
    PHASES,
    SCORES,
    load_audit,
    load_experiments_table,
)
from echomtl.report.front import split_by_front
from echomtl.report.latex import (
    Tex,
    compare_phrase,
    format_number,
    format_small,
    latex_escape,
    macro_name,
)
from echomtl.report.results import METRIC_LABELS, TORCHJD_METHODS, Results
from echomtl.report.tables import (
    claims_rows,
    dataset_counts,
    leakage_rows,
    load_claims,
    protocol_name,
    split_rows,
    time_unit,
)

__all__ = [
    "build_context",
    "plan_outputs",
    "detection_learned",
    "versus_majority",
    "DETECTION_FLOOR",
    "REQUIRED_FILES",
    "CONDITIONAL_FILES",
]

#: files the template always includes (context["files"] keys), and those needed when a part
#: of the study ran (checked by build_context so that a missing rule output fails clearly).
REQUIRED_FILES = {
    "tables": ("dataset", "leakage", "main", "claims"),
    "figures": (
        "training_curves",
        "main_comparison",
        "detection_examples",
        "confusion_matrix",
        "per_class_ap",
    ),
}
CONDITIONAL_FILES = {
    "alpha": (("tables", "alpha"), ("figures", "alpha_sensitivity")),
    "augmentation": (("tables", "augmentation"), ("figures", "augmentation")),
    "dual_backbone": (("tables", "dual_backbone"),),
    "traditional": (("tables", "traditional"),),
    "front": (("figures", "front"),),
    "manual": (("tables", "selection"),),
    "gradnorm": (("tables", "weight_phases"), ("figures", "gradnorm_weights")),
    "diagnostics": (("figures", "gradient_diagnostics"), ("tables", "diagnostics")),
    "split": (("tables", "split"),),
}


def plan_outputs(experiments: pd.DataFrame | PathLike, reference: str) -> dict[str, list[str]]:
    """Which tables and figures the paper needs, from the experiments table alone.

    For the workflow's DAG (it is known before any run): ``{"tables": [...], "figures": [...]}``
    with the names of :data:`REQUIRED_FILES` plus those of :data:`CONDITIONAL_FILES` whose part of
    the study is configured (e.g. ``alpha`` only when the reference method has two or more alphas).
    """
    t = load_experiments_table(experiments)
    if reference not in t.index:
        raise ValueError(f"reference experiment {reference!r} is not in the experiments table")
    ref = t.loc[reference]
    variants = t[t["split_variant"]]
    t = t[~t["split_variant"]]
    same = t[(t["method"] == ref["method"]) & (t["model"] == ref["model"])]
    alphas = same[(same["augment"] == ref["augment"]) & (same["w_det"] == ref["w_det"])]
    alphas = alphas[alphas["w_cls"] == ref["w_cls"]]
    aug = same[(same["augment"] != ref["augment"]) & (same["alpha"] == ref["alpha"])]
    group_size = t["group"].map(t["group"].value_counts())
    fixed_mt = (t["model"] == "multitask") & (t["method"] == "fixed")
    flags = {
        "alpha": alphas["alpha"].nunique() >= 2,
        "augmentation": len(aug) > 0,
        "dual_backbone": bool((t["model"] == "dual_backbone").any()),
        "traditional": bool(fixed_mt.any()),
        "front": int(fixed_mt.sum()) >= 2,
        "manual": bool((fixed_mt & (group_size > 1)).any()),
        "gradnorm": ref["method"] == "gradnorm",
        "diagnostics": bool((t["model"] == "multitask").any()),
        "split": len(variants) > 0,
    }
    out = {kind: list(names) for kind, names in REQUIRED_FILES.items()}
    for flag, needs in CONDITIONAL_FILES.items():
        if flags[flag]:
            for kind, name in needs:
                out[kind].append(name)
    return out


def _listing(items: Sequence[Any]) -> Tex:
    items = [latex_escape(i) for i in items]
    if not items:
        return Tex("")
    if len(items) == 1:
        return items[0]
    return Tex(", ".join(items[:-1]) + " and " + items[-1])


class _Numbers(dict):
    """numbers.tex content; ``ref(key)`` gives the macro and checks the key exists."""

    def put(self, key: str, value: Any) -> None:
        if key in self:
            raise ValueError(f"number {key!r} defined twice")
        macro_name(key)  # fails early on an unusable key
        self[key] = value

    def ref(self, key: str) -> Tex:
        if key not in self:
            raise KeyError(f"the paper needs result {key!r}, which was not measured")
        return Tex("\\" + macro_name(key) + "{}")


def _roles(res: Results) -> dict[str, Any]:
    """Which experiment plays which part (from model/method, not from names)."""
    t = res.experiments
    ran = [e for e in t.index if res.ran(e)]
    chosen = {res.chosen[g] for g in res.groups()}

    def first(pred: Callable[[pd.Series], bool]) -> str | None:
        for e in ran:
            if e in chosen and pred(t.loc[e]):
                return str(e)
        return None

    group_size = t["group"].map(t["group"].value_counts())
    return {
        "det_only": first(lambda r: r["model"] == "det_only"),
        "dual": first(lambda r: r["model"] == "dual_backbone"),
        "stopgrad": first(lambda r: r["model"] == "stopgrad"),
        "rlw": first(lambda r: r["method"] == "rlw"),
        "fixed": first(
            lambda r: (
                r["model"] == "multitask" and r["method"] == "fixed" and group_size[r.name] == 1
            )
        ),
        "manual": first(
            lambda r: (
                r["model"] == "multitask" and r["method"] == "fixed" and group_size[r.name] > 1
            )
        ),
        "uncertainty": first(lambda r: r["method"] == "uncertainty"),
        "torchjd": [e for e in ran if e in chosen and t.loc[e, "method"] in TORCHJD_METHODS],
    }


def _span(start: float, end: float) -> str:
    if end <= start:
        return "first logged step"
    return f"{100 * start:g}--{100 * end:g}" + "\\% of the steps"


def _cfg(config: Mapping, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"config key {path!r} missing (needed by the paper)")
        node = node[part]
    return node


def _front(res: Results, nums: _Numbers) -> dict[str, list[str]] | None:
    """The configurations a fixed-weight run dominates, and those beyond the front
    (``report.front``, on test point estimates); None with fewer than two front runs."""
    front = res.front_runs()
    if len(front) < 2:
        return None
    point = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in front}
    rivals = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in res.front_rivals()}
    split = split_by_front(rivals, point)
    nums.put("count/front_runs", len(front))
    nums.put("count/front_rivals", len(rivals))
    nums.put("count/front_dominated", len(split["dominated"]))
    nums.put("count/front_beyond", len(split["beyond"]))
    return split


def _check_files(files: Mapping, has: Mapping[str, bool]) -> None:
    missing = []
    for kind, names in REQUIRED_FILES.items():
        missing += [f"{kind}.{n}" for n in names if n not in files.get(kind, {})]
    for flag, needs in CONDITIONAL_FILES.items():
        if has.get(flag):
            missing += [
                f"{k}.{n} (the study ran {flag})" for k, n in needs if n not in files.get(k, {})
            ]
    if "numbers" not in files:
        missing.append("numbers")
    if "bibliography" not in files:
        missing.append("bibliography")
    if missing:
        raise ValueError("build_context: context files missing: " + ", ".join(missing))


#: Detection floor: when the upper 95% bound of every main configuration's test mAP@0.5 lies
#: below it, the build's detectors did not learn to localise jets, and the text says that the
#: detection comparisons cannot answer the question (whatever their verdicts).
DETECTION_FLOOR = 0.10


def detection_learned(upper_bounds: Sequence[float], floor: float = DETECTION_FLOOR) -> bool:
    """Whether any configuration's mAP@0.5 upper bound reaches the floor (no bound: True)."""
    finite = [float(b) for b in upper_bounds if not math.isnan(float(b))]
    return not finite or max(finite) >= floor


def versus_majority(low: float, high: float, majority: float) -> str:
    """``above``/``below``/``indistinguishable``: a view-accuracy interval against the share of
    the most frequent view (what always predicting that view scores)."""
    if low > majority:
        return "above"
    if high < majority:
        return "below"
    return "indistinguishable"


def _majority_view_share(counts: pd.DataFrame, schemes: Sequence[str]) -> float:
    """Share of the most frequent view among the labelled test images of ``schemes``."""
    rows = counts[counts["Scheme"].isin(list(schemes)) & (counts["Split"] == "test")]
    views = [c for c in counts.columns if c.startswith("view:") and c != "view:missing"]
    totals = rows[views].sum()
    return float(totals.max() / totals.sum()) if len(rows) and totals.sum() else math.nan


def _pooled_fold_audit(fold_audits: list[dict]) -> dict:
    """The cross-validated study's view of the data: the folds' test parts, pooled (each image
    once), with the totals the paper cites under ``data/cv/test``."""
    first = fold_audits[0]
    total = {"n_images": 0, "n_patients": 0, "n_videos": 0}
    for audit in fold_audits:
        for key in total:
            total[key] += int(audit["totals"]["test"][key])
    return {**first, "splits": ["test"], "totals": {"test": total}, "leakage": [], "counts": []}


def build_context(
    res: Results,
    config: Mapping[str, Any],
    audits: Mapping[str, PathLike | dict],
    claims_yaml: PathLike,
    files: Mapping[str, Any],
    diagnostics: pd.DataFrame | None = None,
    phases: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Collect what ``paper/main.tex.j2`` needs (see module docstring).

    Args:
        res: the loaded results (:func:`echomtl.report.results.load_results`).
        config: the validated workflow config (``data``, ``model``, ``train``, ``seeds``, ...).
        audits: ``{split scheme: audit.json}``; the key ``config["data"]["split_scheme"]`` is the
            split the experiments used; ``original`` (when present) is the export's own split,
            whose leakage the Limitations section reports.
        claims_yaml: ``paper/claims.yaml``.
        files: ``{"numbers": path, "bibliography": path, "tables": {name: path},
            "figures": {name: path}}`` (names: see :data:`REQUIRED_FILES`).
        diagnostics: :func:`echomtl.report.aggregate.diagnostics_summary` of the shared-trunk runs.
        phases: :func:`echomtl.report.aggregate.weight_phases` of the reference's steps.
    """
    nums = _Numbers()
    ref = res.reference
    labels = {e: res.label(e) for e in res.experiments.index}
    ref_row = res.row(ref)
    roles = _roles(res)
    alphas, aug = res.reference_variants()
    main_groups = res.main_groups()
    audits = {k: (v if isinstance(v, dict) else load_audit(v)) for k, v in audits.items()}
    scheme = str(_cfg(config, "data.split_scheme"))
    fold_audits = [k for k in audits if cv_fold_of(k) is not None]
    study_audit = audits.get(scheme)
    if scheme == "cv" and fold_audits:
        study_audit = _pooled_fold_audit([audits[k] for k in fold_audits])
    if study_audit is None:
        raise ValueError(
            f"no audit for the split scheme the study used ({scheme!r}); got {list(audits)}"
        )

    # ---- results numbers ----------------------------------------------------------------
    metrics = ("map50", "map50_95", "precision", "recall", "f1", "view_accuracy", "view_macro_f1")
    train_metrics = (
        "loss_det_initial", "loss_det_final", "loss_det_change_pct", "loss_cls_initial",
        "loss_cls_final", "loss_cls_change_pct", "weight_det_initial", "weight_det_final",
        "weight_cls_initial", "weight_cls_final",
    )  # fmt: skip
    ran = [e for e in res.experiments.index if res.ran(e)]
    time_all = [res.get(e, "train_seconds", "train") for e in ran]
    unit, scale = time_unit(time_all)
    for exp in ran:
        for m in metrics:
            if res.has(exp, m):
                nums.put(f"test/{exp}/{m}", format_number(res.mean(exp, m)))
                if res.n_seeds(exp, m) > 1:
                    nums.put(f"test/{exp}/{m}/std", format_number(res.std(exp, m)))
            ci = res.interval(exp, m)
            if ci is not None:
                nums.put(f"ci/{exp}/{m}/low", format_number(ci["low"]))
                nums.put(f"ci/{exp}/{m}/high", format_number(ci["high"]))
            pair = res.pair(exp, m) if exp != ref else None
            if pair is not None:
                nums.put(f"diff/{exp}/{m}", format_number(pair["diff"], signed=True))
                nums.put(f"diff/{exp}/{m}/low", format_number(pair["low"], signed=True))
                nums.put(f"diff/{exp}/{m}/high", format_number(pair["high"], signed=True))
                mdd = pair.get("mdd")
                if mdd is not None and not math.isnan(float(mdd)):
                    nums.put(f"diff/{exp}/{m}/mdd", format_number(float(mdd), 2))
        for m in train_metrics:
            if res.has(exp, m, "train"):
                pct = m.endswith("_pct")
                value = res.mean(exp, m, "train")
                nums.put(
                    f"train/{exp}/{m}",
                    format_number(value / 100 if pct else value, 1 if pct else 3, percent=pct),
                )
        if res.has(exp, "n_parameters", "model"):
            nums.put(
                f"model/{exp}/params_m",
                format_number(res.mean(exp, "n_parameters", "model") / 1e6, 2),
            )
        if res.has(exp, "train_seconds", "train"):
            nums.put(
                f"time/{exp}", format_number(res.mean(exp, "train_seconds", "train") / scale, 1)
            )
        if res.has(exp, "n_images"):
            nums.put(f"test/{exp}/n_images", int(res.mean(exp, "n_images")))
    for sel in res.selections.values():
        for cand in sel["candidates"]:
            nums.put(f"valid/{cand['experiment']}/score", format_number(cand["score"]))

    def val(exp: str, metric: str, split: str = "test") -> Tex:
        prefix = {"test": "test", "train": "train"}.get(split, split)
        text = nums.ref(f"{prefix}/{exp}/{metric}")
        if split == "test" and f"test/{exp}/{metric}/std" in nums:
            text = Tex(f"{text}$\\pm${nums.ref(f'test/{exp}/{metric}/std')}")
        return text

    def ci(exp: str, metric: str) -> Tex:
        return Tex(f"[{nums.ref(f'ci/{exp}/{metric}/low')}, {nums.ref(f'ci/{exp}/{metric}/high')}]")

    def diff(exp: str, metric: str) -> Tex:
        """``d [low, high]``; for a difference not distinguishable at 95%, also the minimum
        detectable difference (what the comparison could have seen; never read as equality)."""
        k = f"diff/{exp}/{metric}"
        text = f"{nums.ref(k)} [{nums.ref(k + '/low')}, {nums.ref(k + '/high')}]"
        if verdict_of(exp, metric) == "not distinguishable at 95%" and k + "/mdd" in nums:
            text += f"; minimum detectable difference {nums.ref(k + '/mdd')}"
        return Tex(text)

    def verdict_of(exp: str, metric: str) -> str:
        pair = res.pair(exp, metric)
        if pair is None:
            raise KeyError(f"no paired comparison of {ref!r} with {exp!r} on {metric!r}")
        return str(pair["verdict"])

    def cmp(exp: str, metric: str) -> Tex:
        return compare_phrase(verdict_of(exp, metric))

    def lname(exp: str) -> Tex:
        """Label for use inside a sentence (first letter lower-cased unless an acronym)."""
        text = str(labels[exp])
        first = text.split(" ", 1)[0]
        rest = first[1:].replace("-", "")  # "Stop-gradient" is a word too, "IMTL-G" an acronym
        if len(first) > 1 and first[0].isupper() and rest.isalpha() and rest.islower():
            text = text[0].lower() + text[1:]
        return Tex(text)

    def compare_list(exps: Sequence[str], metric: str) -> Tex:
        """'higher than that of X (difference d [l, h]), ... and lower than that of Y (...)'."""
        parts = []
        for e in exps:
            name, note = str(lname(e)), f"difference {diff(e, metric)}"
            if name.endswith(")"):  # "manual weights (w = 0.2; difference ...)"
                text = f"{name[:-1]}; {note})"
            else:
                text = f"{name} ({note})"
            parts.append(Tex(f"{cmp(e, metric)} that of {text}"))
        return _listing(parts)

    def comparable(exp: str | None, metric: str = "map50") -> bool:
        return exp is not None and exp != ref and res.pair(exp, metric) is not None

    # ---- comparisons for the abstract / conclusion --------------------------------------
    main_exps = [res.chosen[g] for g in main_groups]
    others = [e for e in main_exps if e != ref and comparable(e)]
    by_verdict: dict[str, list[str]] = {"higher": [], "lower": [], "not distinguishable at 95%": []}
    for e in others:
        by_verdict[verdict_of(e, "map50")].append(e)
    view_others = [e for e in others if comparable(e, "view_accuracy")]
    by_verdict_view: dict[str, list[str]] = {
        "higher": [],
        "lower": [],
        "not distinguishable at 95%": [],
    }
    for e in view_others:
        by_verdict_view[verdict_of(e, "view_accuracy")].append(e)
    nums.put("count/main_others", len(others))
    nums.put("count/higher", len(by_verdict["higher"]))
    nums.put("count/lower", len(by_verdict["lower"]))
    nums.put("count/nd", len(by_verdict["not distinguishable at 95%"]))
    ranked = sorted(
        main_exps, key=lambda e: -res.get(e, "map50") if res.has(e, "map50") else math.inf
    )
    key_rivals = [roles[r] for r in ("fixed", "manual", "det_only", "dual") if comparable(roles[r])]

    # ---- config numbers ------------------------------------------------------------------
    seeds = list(_cfg(config, "seeds"))
    nums.put("cfg/n_seeds", len(seeds))
    nums.put("cfg/loss_window", LOSS_WINDOW)
    nums.put("cfg/epochs", int(_cfg(config, "train.epochs")))
    nums.put("cfg/imgsz", int(_cfg(config, "model.imgsz")))
    nums.put("cfg/batch_size", int(_cfg(config, "train.batch_size")))
    nums.put(
        "cfg/nominal_batch",
        int(config["train"].get("nominal_batch", _cfg(config, "train.batch_size"))),
    )
    nums.put("cfg/attach_layer", int(config["model"].get("attach_layer", 9)))
    nums.put("cfg/scale", str(_cfg(config, "model.scale")))
    nums.put("cfg/n_resamples", int(_cfg(config, "report.bootstrap_resamples")))
    gn = config.get("balancing", {}).get("gradnorm", {})
    nums.put("cfg/gradnorm_lr", Tex(f"{gn.get('lr', math.nan):g}"))
    nums.put("cfg/gradnorm_l0", int(_cfg(config, "balancing.gradnorm.l0_window")))
    nums.put("cfg/gradnorm_min_weight", Tex(f"{gn.get('min_weight', math.nan):g}"))
    nums.put("cfg/diagnostics_every", int(_cfg(config, "balancing.diagnostics_every")))
    hyp = config["train"].get("hyp", {})
    nums.put("cfg/lr0", Tex(f"{hyp.get('lr0', math.nan):g}"))
    nums.put(
        "cfg/ref_alpha", Tex(f"{ref_row['alpha']:g}") if not math.isnan(ref_row["alpha"]) else "--"
    )
    nums.put("cfg/ref_w_det", Tex(f"{ref_row['w_det']:g}"))
    nums.put("cfg/ref_w_cls", Tex(f"{ref_row['w_cls']:g}"))
    conf = config.get("evaluation", {})
    nums.put("cfg/iou_thres", Tex(f"{conf.get('iou_thres', 0.6):g}"))
    nums.put("cfg/conf_thres", Tex(f"{conf.get('conf_thres', 0.001):g}"))
    selection_metric = config["report"].get("selection_metric", "mean_map50_accuracy")
    if scheme == "cv":
        n_folds = int(_cfg(config, "data.cv_folds"))
        nums.put("cfg/cv_folds", n_folds)
        nums.put(
            "cfg/cv_valid_pct",
            format_number(float(_cfg(config, "data.cv_valid_fraction")), 0, percent=True),
        )
        trained = [e for e in ran if not bool(res.row(e).get("per_fold_selection", False))]
        nums.put(
            "count/cv_trainings",
            n_folds * len(seeds) * sum(not res.is_split_variant(e) for e in trained),
        )

    # ---- data --------------------------------------------------------------------------
    counts, exact_views = dataset_counts(audits)
    for _, r in counts.iterrows():
        base = f"data/{r['Scheme']}/{r['Split']}"
        for col, key in (("Images", "images"), ("Patients", "patients"), ("Videos", "videos")):
            nums.put(f"{base}/{key}", int(r[col]))
    leak = leakage_rows(audits)
    leak_info: list[dict] = []
    for _, r in leak.iterrows():
        base = f"leak/{r['scheme']}/{r['split']}"
        nums.put(f"{base}/videos", int(r["n_videos_in_train"]))
        nums.put(f"{base}/videos_total", int(r["n_videos"]))
        nums.put(f"{base}/patients", int(r["n_patients_in_train"]))
        nums.put(f"{base}/patients_total", int(r["n_patients"]))
        nums.put(f"{base}/images_video", int(r["n_images_from_train_videos"]))
        nums.put(f"{base}/images_patient", int(r["n_images_from_train_patients"]))
        nums.put(f"{base}/images_total", int(r["n_images"]))
        share = (
            100.0 * r["n_images_from_train_videos"] / r["n_images"] if r["n_images"] else math.nan
        )
        nums.put(f"{base}/images_video_pct", format_number(share / 100, 1, percent=True))
        nums.put(f"{base}/identical", int(r["n_images_identical_to_train"]))
        leak_info.append(
            {
                "scheme": r["scheme"],
                "split": r["split"],
                "key": base,
                "any": bool(r["n_images_from_train_videos"] or r["n_images_from_train_patients"]),
                "identical": int(r["n_images_identical_to_train"]) > 0,
            }
        )
    majority = (
        _majority_view_share(counts, fold_audits if scheme == "cv" else [scheme])
        if exact_views
        else math.nan
    )
    if not math.isnan(majority):
        nums.put("data/majority_view_share", format_number(majority))
    used_splits = ["train", "valid", "test"] if scheme == "cv" else list(study_audit["splits"])
    for key, value in study_audit["totals"].get("test", {}).items():
        if scheme == "cv":
            nums.put(f"data/cv/test/{key.removeprefix('n_')}", int(value))
    leak_scheme = "original" if "original" in audits else scheme
    source_audit = audits[leak_scheme]
    nums.put("data/n_defects", int(source_audit.get("n_defects", 0)))
    nums.put("data/missing_views", int(sum(source_audit["view_missing"].values())))

    # ---- claims ------------------------------------------------------------------------
    claims = load_claims(claims_yaml)
    rows = claims_rows(claims, res)
    for r in rows:
        nums.put(f"claim/{r['id']}", Tex(format_number(r["claimed"], r["digits"]) + r["suffix"]))
    map_claims = [r for r in rows if r["metric"] == "map50" and r["status"] == "measured"]
    nums.put("count/claims", len(rows))
    nums.put("count/claims_measured", sum(r["status"] == "measured" for r in rows))
    nums.put("count/map_claims", len(map_claims))
    nums.put("count/map_claims_below", sum(r["measured"] < r["claimed"] for r in map_claims))
    source_order = list(claims.get("facts", {}).get("source_view_order", []))

    # ---- diagnostics -------------------------------------------------------------------
    diag_rows: list[dict] = []
    if diagnostics is not None and not diagnostics.empty:
        agg = diagnostics.groupby(["experiment", "scope"], sort=False).agg(
            median_cosine=("median_cosine", "mean"),
            frac_negative=("frac_negative", "mean"),
            ratio=("median_log10_norm_ratio", "mean"),
            wratio=("median_log10_wnorm_ratio", "mean"),
            share=("median_share_det", "mean"),
            null=("median_null_cosine", "mean"),
        )
        for (exp, scope), r in agg.iterrows():
            base = f"diag/{exp}/{scope}"
            nums.put(f"{base}/median_cosine", format_small(r["median_cosine"]))
            nums.put(f"{base}/frac_negative", format_number(r["frac_negative"], 0, percent=True))
            nums.put(f"{base}/norm_ratio", format_number(10 ** r["ratio"], 1))
            nums.put(f"{base}/wnorm_ratio", format_number(10 ** r["wratio"], 1))
            nums.put(f"{base}/share_det", format_number(r["share"], 0, percent=True))
            nums.put(f"{base}/null_cosine", format_small(r["null"]))
            diag_rows.append(
                {
                    "exp": exp,
                    "scope": scope,
                    "key": base,
                    "conflict": bool(r["median_cosine"] < 0),
                    "mostly_negative": bool(r["frac_negative"] > 0.5),
                }
            )
    diag_by = {(d["exp"], d["scope"]): d for d in diag_rows}
    for scope in ("W", "trunk"):
        rows_s = [d for d in diag_rows if d["scope"] == scope]
        nums.put(f"count/diag_{scope}", len(rows_s))
        nums.put(f"count/diag_{scope}_negative", sum(d["conflict"] for d in rows_s))
        nums.put(f"count/diag_{scope}_mostly_negative", sum(d["mostly_negative"] for d in rows_s))

    # ---- weight phases -----------------------------------------------------------------
    phase_rows = []
    if phases is not None and not phases.empty:
        for _, r in phases.iterrows():
            base = f"phase/{r['phase']}"
            nums.put(f"{base}/weight_det", format_number(r["weight_det"]))
            nums.put(f"{base}/weight_cls", format_number(r["weight_cls"]))
            nums.put(f"{base}/ratio", format_number(r["ratio"], 1))
            phase_rows.append({"phase": r["phase"], "key": base})
    phase_text = _listing([Tex(f"{latex_escape(n)} ({_span(s, e)})") for n, s, e in PHASES])

    # ---- split axis (the study's split vs the export's, per evaluation split) -------------
    pairs = res.split_pairs()
    for r in split_rows(res, audits):
        key = f"split/{r['experiment']}/{r['split']}"
        for m in ("map50", "map50_95", "view_accuracy"):
            if not math.isnan(r[m]):
                nums.put(f"{key}/{m}", format_number(r[m]))
        nums.put(f"{key}/leak_pct", format_number(r["n_from_train_videos"] / r["n_images"], 1,
                                                  percent=True))  # fmt: skip
    split_pairs = []
    for study_run, variant in pairs:
        both = [s for s in ("valid", "test") if all(res.has(e, "map50", s) for e in
                                                    (study_run, variant))]  # fmt: skip
        # (variant's split, study run's split): the same split name where both have it, else
        # the variant's validation split beside the study's (pooled) test set
        compared = [(s, s) for s in both]
        if not compared and res.has(variant, "map50", "valid") and res.has(study_run, "map50"):
            compared = [("valid", "test")]
        for s, t in compared:
            for m in ("map50", "view_accuracy"):
                a, b = res.get(variant, m, s), res.get(study_run, m, t)
                if not (math.isnan(a) or math.isnan(b)):
                    nums.put(f"splitdiff/{variant}/{s}/{m}", format_number(a - b, signed=True))
        split_pairs.append(
            {
                "study": study_run,
                "variant": variant,
                "scheme": protocol_name(str(res.row(study_run)["split"])),
                "variant_scheme": protocol_name(str(res.row(variant)["split"])),
                "splits": compared,
                "variant_splits": [s for s in ("valid", "test") if res.has(variant, "map50", s)],
                "classifier": res.has_classifier(variant),
            }
        )

    # ---- flags ---------------------------------------------------------------------------
    has = {
        "alpha": len(alphas) >= 2,
        "augmentation": aug is not None,
        "dual_backbone": roles["dual"] is not None,
        "stopgrad": roles["stopgrad"] is not None,
        "det_only": roles["det_only"] is not None,
        "fixed": roles["fixed"] is not None,
        "manual": roles["manual"] is not None
        and roles["manual"] in [res.chosen.get(g) for g in res.selections],
        "uncertainty": roles["uncertainty"] is not None,
        "torchjd": bool(roles["torchjd"]),
        "gradnorm": ref_row["method"] == "gradnorm",
        "diagnostics": bool(diag_rows),
        "multi_seed": len(seeds) > 1,
        "synthetic": _cfg(config, "data.source") == "synthetic",
        "view_order_differs": bool(source_order)
        and source_order != list(_cfg(config, "data.view_names")),
        "exact_view_counts": exact_views,
        "original_audit": "original" in audits,
        "ema": bool(config["train"].get("ema", True)),
        "split": bool(split_pairs),
        "cv": scheme == "cv",
    }
    has["traditional"] = has["fixed"] or has["manual"]
    front = _front(res, nums)
    has["front"] = front is not None
    map_highs = [res.interval(e, "map50")["high"] for e in main_exps if res.interval(e, "map50")]
    has["detection_learned"] = detection_learned(map_highs)
    nums.put("rule/detection_floor", format_number(DETECTION_FLOOR, 2))
    if map_highs:
        nums.put("max/map50_high", format_number(max(map_highs)))
    view_ci = res.interval(ref, "view_accuracy")
    view_vs_majority = (
        versus_majority(view_ci["low"], view_ci["high"], majority)
        if view_ci is not None and not math.isnan(majority)
        else None
    )
    comparisons = []
    if has["fixed"] or has["manual"]:
        both = has["fixed"] and has["manual"]
        if both:
            comparisons.append("fixed and manually tuned weights")
        else:
            comparisons.append("fixed weights" if has["fixed"] else "manually tuned weights")
    if has["det_only"]:
        comparisons.append("a detector trained alone")
    if has["dual_backbone"]:
        comparisons.append("a dual-backbone model without shared parameters")
    if has["uncertainty"]:
        comparisons.append(Tex("uncertainty weighting~\\citep{kendall2018uncertainty}"))
    if has["torchjd"]:
        names = _listing([res.label(e) for e in roles["torchjd"]])
        comparisons.append(
            Tex(f"gradient aggregators from the \\texttt{{torchjd}} library~"
                f"\\citep{{quinton2024jacobian}} ({names})")
        )  # fmt: skip
    if not comparisons:
        comparisons.append("no other configuration (only the reference ran)")
    _check_files(files, has)

    manual_group = res.row(roles["manual"])["group"] if roles["manual"] else None
    return {
        "numbers": dict(nums),
        "files": dict(files),
        "has": has,
        "view_vs_majority": view_vs_majority,
        "front": front,
        "ref": ref,
        "ref_label": labels[ref],
        "roles": roles,
        "labels": labels,
        "label": lambda e: labels[e],
        "metric_label": lambda m: latex_escape(METRIC_LABELS.get(m, m)),
        "main": [
            {
                "group": g,
                "exp": res.chosen[g],
                "label": res.group_label(g),
                "is_ref": res.chosen[g] == ref,
            }
            for g in main_groups
        ],
        "others": others,
        "higher_than": by_verdict["higher"],
        "lower_than": by_verdict["lower"],
        "nd_from": by_verdict["not distinguishable at 95%"],
        "view_higher_than": by_verdict_view["higher"],
        "view_lower_than": by_verdict_view["lower"],
        "view_nd_from": by_verdict_view["not distinguishable at 95%"],
        "key_rivals": key_rivals,
        "comparisons_text": _listing(comparisons),
        "other_rivals": [e for e in others if e not in key_rivals],
        "best_by_map": ranked[0] if ranked else None,
        "alphas": alphas,
        "alpha_others": [e for e in alphas if e != ref and comparable(e)],
        "aug": aug,
        "manual_group": manual_group,
        "selection_definition": latex_escape(SCORES[selection_metric]),
        "diag": diag_rows,
        "diag_by": diag_by,
        "phases": phase_rows,
        "phase_definition": phase_text,
        "leak": leak_info,
        "split_pairs": split_pairs,
        "leak_scheme": leak_scheme,
        "leak_scheme_name": protocol_name(leak_scheme),
        "scheme_name": protocol_name(scheme),
        "leak_main": [d for d in leak_info if d["scheme"] == leak_scheme],
        "scheme": scheme,
        "used_splits": used_splits,
        "seeds": [str(s) for s in seeds],
        "view_names": [str(v) for v in _cfg(config, "data.view_names")],
        "class_names": [str(c) for c in _cfg(config, "data.class_names")],
        "source_view_order": source_order,
        "source_view_order_where": claims.get("facts", {}).get("source_view_order_where", ""),
        "claims_bibkey": claims["source"].get("bibkey", "seedguide"),
        "time_unit": {"h": "hours", "min": "minutes"}[unit],
        "device": str(config["train"].get("device", "cpu")),
        "val": val,
        "ci": ci,
        "diff": diff,
        "cmp": cmp,
        "verdict": verdict_of,
        "comparable": comparable,
        "has_ci": lambda e, m: f"ci/{e}/{m}/low" in nums,
        "has_val": lambda e, m, split="test": f"{split}/{e}/{m}" in nums,
        "n": nums.ref,
        "listing": _listing,
        "lname": lname,
        "compare_list": compare_list,
        "listing_labels": lambda exps: _listing([lname(e) for e in exps]),
    }
