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
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from echomtl.atomic import PathLike
from echomtl.data.splits import cv_fold_of
from echomtl.evaluation.selection import score_definition
from echomtl.evaluation.tidy import LOSS_WINDOW
from echomtl.evaluation.vocabulary import (
    AXIS_METRICS,
    FAMILY_LEVEL,
    INTERFERENCE_WORDS,
    METRIC_LABELS,
    REPORTED_METRICS,
    TASK_METRICS,
    UNDECIDED,
    VIEW_METRICS,
)
from echomtl.report.front import split_by_front
from echomtl.report.labels import POINT_WORDS
from echomtl.report.latex import (
    Tex,
    compare_phrase,
    format_number,
    format_share,
    format_small,
    interval_digits,
    latex_escape,
    macro_name,
)
from echomtl.report.outputs import planned
from echomtl.report.queries import (
    SPLIT_WORDS,
    claims_rows,
    comparison_rows,
    dataset_counts,
    leakage_rows,
    load_claims,
    protocol_name,
    selection_margins,
    split_rows,
    time_unit,
)
from echomtl.report.reading import (
    DETECTION_EXAMPLES_RULE,
    DETECTION_FLOOR,
    DOMINANCE_SHARE,
    SMALL_CLASS_BOXES,
    STEP_TOLERANCE,
    against_expectation,
    detection_learned,
    detection_step_reading,
    failure_reasons,
    interference_reading,
    versus_majority,
)
from echomtl.report.results import Results
from echomtl.report.summaries import PHASES, diagnostics_by_configuration, load_audit

__all__ = [
    "build_context",
    "detection_learned",
    "versus_majority",
    "DETECTION_FLOOR",
]


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
    """The experiment that plays each role of the study's plan: its group's chosen row."""
    roles = res.study.roles
    out = {r: (res.chosen[g] if g else None) for r, g in roles.items() if r != "torchjd"}
    return {**out, "torchjd": [res.chosen[g] for g in roles["torchjd"]]}


def _merge(*sections: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's context from its sections; a key that two sections define is an error, never
    a silent overwrite."""
    out: dict[str, Any] = {}
    for section in sections:
        if clash := sorted(set(out) & set(section)):
            raise ValueError(f"paper context: {', '.join(clash)} defined by two sections")
        out.update(section)
    return out


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
    (``report.front``, on test point estimates); None when the study has no front."""
    front = res.study.front_runs
    if not res.study.flags["front"]:
        return None
    point = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in front}
    rivals = {e: (res.get(e, "map50"), res.get(e, "view_accuracy")) for e in res.front_rivals()}
    split = split_by_front(rivals, point)
    nums.put("count/front_runs", len(front))
    nums.put("count/front_rivals", len(rivals))
    nums.put("count/front_dominated", len(split["dominated"]))
    nums.put("count/front_beyond", len(split["beyond"]))
    return split


def _check_files(files: Mapping, res: Results) -> None:
    """Every output the study's plan has was rendered."""
    missing = [
        f"{o.kind}s.{o.name}" + (f" (the study has {o.condition})" if o.condition else "")
        for o in planned(res.study)
        if o.name not in files.get(o.kind + "s", {})
    ]
    missing += [k for k in ("numbers", "bibliography") if k not in files]
    if missing:
        raise ValueError("build_context: context files missing: " + ", ".join(missing))


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


METRICS = REPORTED_METRICS
TRAIN_METRICS = (
    "loss_det_initial", "loss_det_final", "loss_det_change_pct", "loss_cls_initial",
    "loss_cls_final", "loss_cls_change_pct", "weight_det_initial", "weight_det_final",
    "weight_cls_initial", "weight_cls_final",
)  # fmt: skip


def _result_numbers(res: Results, nums: _Numbers) -> str:
    """Test values with intervals and paired differences (decimals follow the interval), training
    quantities, model sizes and training times (wall clock); returns the time unit's name."""
    ref = res.reference
    ran = [e for e in res.experiments.index if res.ran(e)]
    unit, scale = time_unit(res.get(e, "train_seconds", "train") for e in ran)
    for exp in ran:
        for m in METRICS:
            ci = res.interval(exp, m)
            digits = interval_digits(ci["low"], ci["high"]) if ci else 3
            if res.has(exp, m):
                nums.put(f"test/{exp}/{m}", format_number(res.mean(exp, m), digits))
                if res.n_seeds(exp, m) > 1:
                    nums.put(f"test/{exp}/{m}/std", format_number(res.std(exp, m), digits))
            if ci is not None:
                nums.put(f"ci/{exp}/{m}/low", format_number(ci["low"], digits))
                nums.put(f"ci/{exp}/{m}/high", format_number(ci["high"], digits))
            pair = res.pair(exp, m) if exp != ref else None
            if pair is not None:
                d = interval_digits(pair["low"], pair["high"])
                nums.put(f"diff/{exp}/{m}", format_number(pair["diff"], d, signed=True))
                for part in ("low", "high"):  # a bound's side of zero stays visible
                    nums.put(f"diff/{exp}/{m}/{part}", format_small(pair[part], d, signed=True))
                mdd = pair.get("mdd")
                if mdd is not None and not math.isnan(float(mdd)):
                    nums.put(f"diff/{exp}/{m}/mdd", format_number(float(mdd), 2))
                p_holm = pair.get("p_holm")
                if p_holm is not None and not math.isnan(float(p_holm)):
                    nums.put(f"diff/{exp}/{m}/p_holm", format_small(float(p_holm), 3))
        for m in TRAIN_METRICS:
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
            seconds = res.mean(exp, "train_seconds", "train")
            nums.put(f"time/{exp}", format_number(seconds / scale, 1))
        if res.has(exp, "n_images"):
            nums.put(f"test/{exp}/n_images", int(res.mean(exp, "n_images")))
    return {"h": "hours", "min": "minutes"}[unit]


def _selection_numbers(res: Results, nums: _Numbers) -> dict[str, int]:
    """Validation scores, and per group the chosen point's lead over the runner-up and its ties
    (returns the number of tied decisions per group)."""
    selection_ties: dict[str, int] = {}
    for group, sel in res.selections.items():
        for cand in sel["candidates"]:
            nums.put(f"valid/{cand['experiment']}/score", format_number(cand["score"]))
        margins = selection_margins(sel)
        if margins:
            leads = [m for m, _ in margins]
            nums.put(f"sel/{group}/margin_min", format_small(min(leads), 3))
            nums.put(f"sel/{group}/margin_max", format_small(max(leads), 3))
            nums.put(f"sel/{group}/ties", sum(t > 0 for _, t in margins))
            selection_ties[group] = sum(t > 0 for _, t in margins)
            nums.put(f"sel/{group}/decisions", len(margins))
    return selection_ties


class _Helpers:
    """The template's callables: numbers as macros, verdicts as words (each fails on a missing
    result rather than printing a blank)."""

    def __init__(self, res: Results, nums: _Numbers) -> None:
        self.res, self.nums = res, nums
        self.labels = {e: res.label(e) for e in res.experiments.index}

    def val(self, exp: str, metric: str, split: str = "test") -> Tex:
        nums = self.nums
        text = nums.ref(f"{split}/{exp}/{metric}")
        if split == "test" and f"test/{exp}/{metric}/std" in nums:
            text = Tex(f"{text}$\\pm${nums.ref(f'test/{exp}/{metric}/std')}")
        return text

    def ci(self, exp: str, metric: str) -> Tex:
        r = self.nums.ref
        return Tex(f"[{r(f'ci/{exp}/{metric}/low')}, {r(f'ci/{exp}/{metric}/high')}]")

    def verdict(self, exp: str, metric: str) -> str:
        pair = self.res.pair(exp, metric)
        if pair is None:
            raise KeyError(
                f"no paired comparison of {self.res.reference!r} with {exp!r} on {metric!r}"
            )
        return str(pair["verdict"])

    def diff(self, exp: str, metric: str) -> Tex:
        """``d [low, high]``; for a difference not distinguishable at 95%, also the minimum
        detectable difference (what the comparison could have seen; never read as equality)."""
        k, r = f"diff/{exp}/{metric}", self.nums.ref
        text = f"{r(k)} [{r(k + '/low')}, {r(k + '/high')}]"
        if self._held_back(exp, metric):
            text += f"; Holm-adjusted p {r(k + '/p_holm')}"
        elif self.verdict(exp, metric) == UNDECIDED and k + "/mdd" in self.nums:
            text += f"; minimum detectable difference {r(k + '/mdd')}"
        return Tex(text)

    def _held_back(self, exp: str, metric: str) -> bool:
        """Whether the interval decided but the family's adjustment (Holm) did not."""
        pair = self.res.pair(exp, metric) or {}
        return pair.get("verdict_unadjusted", pair.get("verdict")) != pair.get("verdict")

    def cmp(self, exp: str, metric: str) -> Tex:
        if self._held_back(exp, metric):
            return Tex("not distinguishable after Holm's adjustment from")
        return compare_phrase(self.verdict(exp, metric))

    def lname(self, exp: str) -> Tex:
        """Label inside a sentence (first letter lower-cased unless an acronym)."""
        text = str(self.labels[exp])
        first = text.split(" ", 1)[0]
        rest = first[1:].replace("-", "")  # "Stop-gradient" is a word too, "IMTL-G" an acronym
        if len(first) > 1 and first[0].isupper() and rest.isalpha() and rest.islower():
            text = text[0].lower() + text[1:]
        return Tex(text)

    def compare_list(self, exps: Sequence[str], metric: str) -> Tex:
        """'higher than that of X (difference d [l, h]), ... and lower than that of Y (...)'.

        On a detection metric, isolated controls whose detector is by design another's
        (``Study.same_detector``) are named once, with that other: one detector, one comparison.
        """
        twins = {} if metric in VIEW_METRICS else self.res.study.same_detector
        same: dict[str, list[str]] = {}
        for e in exps:
            if e in twins and twins[e] in exps:
                same.setdefault(twins[e], []).append(e)
        parts = []
        for e in exps:
            if e in twins and twins[e] in exps:
                continue
            name, note = str(self.lname(e)), f"difference {self.diff(e, metric)}"
            if same.get(e):
                others = _listing([self.lname(t) for t in same[e]])
                name = f"{name} (the same detector as {others})"
            if name.endswith(")"):  # "manual weights (w = 0.2; difference ...)"
                text = f"{name[:-1]}; {note})"
            else:
                text = f"{name} ({note})"
            parts.append(Tex(f"{self.cmp(e, metric)} that of {text}"))
        return _listing(parts)

    def comparable(self, exp: str | None, metric: str = "map50") -> bool:
        return (
            exp is not None and exp != self.res.reference and self.res.pair(exp, metric) is not None
        )

    def context(self) -> dict[str, Any]:
        nums = self.nums
        return {
            "val": self.val, "ci": self.ci, "diff": self.diff, "cmp": self.cmp,
            "verdict": self.verdict, "comparable": self.comparable, "lname": self.lname,
            "compare_list": self.compare_list, "n": nums.ref, "listing": _listing,
            "label": lambda e: self.labels[e], "labels": self.labels,
            "has_ci": lambda e, m: f"ci/{e}/{m}/low" in nums,
            "has_val": lambda e, m, split="test": f"{split}/{e}/{m}" in nums,
            "listing_labels": lambda exps: _listing([self.lname(e) for e in exps]),
            "fold_choices": self.res.fold_choices,
            "metric_label": lambda m: latex_escape(METRIC_LABELS.get(m, m)),
        }  # fmt: skip


def _verdicts(res: Results, help_: _Helpers, nums: _Numbers, roles: dict) -> dict[str, Any]:
    """Every paired verdict of the main comparison (``Results.verdicts``), per metric, with the
    counts and the range of minimum detectable differences of the undecided ones."""
    main_exps = [res.chosen[g] for g in res.study.main_groups]
    others, verdicts = res.compared, res.verdicts
    for m, by in verdicts.items():
        nums.put(f"count/{m}/compared", sum(len(v) for v in by.values()))
        nums.put(f"count/{m}/higher", len(by["higher"]))
        nums.put(f"count/{m}/lower", len(by["lower"]))
        nums.put(f"count/{m}/nd", len(by[UNDECIDED]))
        if mdds := res.undecided_mdds(m):
            nums.put(f"mdd/{m}/min", format_number(min(mdds), 2))
            nums.put(f"mdd/{m}/max", format_number(max(mdds), 2))
    by_map = verdicts["map50"]
    nums.put("count/main_others", len(others))
    nums.put("count/higher", len(by_map["higher"]))
    nums.put("count/lower", len(by_map["lower"]))
    nums.put("count/nd", len(by_map[UNDECIDED]))
    ranked = sorted(
        main_exps, key=lambda e: -res.get(e, "map50") if res.has(e, "map50") else math.inf
    )
    key_rivals = [
        roles[r] for r in ("fixed", "manual", "det_only", "dual") if help_.comparable(roles[r])
    ]
    view = verdicts["view_accuracy"]
    return {
        "main_exps": main_exps,
        "others": others,
        "verdicts": verdicts,
        "verdict_metrics": [m for m, by in verdicts.items() if sum(map(len, by.values()))],
        "higher_than": by_map["higher"],
        "lower_than": by_map["lower"],
        "nd_from": by_map[UNDECIDED],
        "view_higher_than": view["higher"],
        "view_lower_than": view["lower"],
        "view_nd_from": view[UNDECIDED],
        "key_rivals": key_rivals,
        "other_rivals": [e for e in others if e not in key_rivals],
        "best_by_map": ranked[0] if ranked else None,
    }


def _config_numbers(config: Mapping, nums: _Numbers, ref_row: pd.Series, res: Results) -> None:
    seeds = list(_cfg(config, "seeds"))
    nums.put("cfg/n_seeds", len(seeds))
    decisive = list(res.study.decisive_seeds) if res.study.decisive else []
    nums.put("cfg/n_seeds_decisive", len(seeds) + len(decisive))
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
    nums.put("cfg/warmup_epochs", Tex(f"{float(_cfg(config, 'train.hyp.warmup_epochs')):g}"))
    nums.put("cfg/warmup_floor", int(config["train"].get("warmup_min_iterations", 100)))
    alpha = ref_row["alpha"]
    nums.put("cfg/ref_alpha", Tex(f"{alpha:g}") if not math.isnan(alpha) else "--")
    nums.put("cfg/ref_w_det", Tex(f"{ref_row['w_det']:g}"))
    if res.alpha_chosen:  # under cv one alpha per fold, in fold order
        chosen = res.fold_choices(res.alpha_chosen) or [res.alpha_chosen]
        alphas = ", ".join(f"{float(res.row(e)['alpha']):g}" for e in chosen)
        nums.put("cfg/alpha_chosen", Tex(alphas))
        nums.put("count/alpha_candidates", len(res.study.choices["gradnorm_alpha"]))
    nums.put("cfg/ref_w_cls", Tex(f"{ref_row['w_cls']:g}"))
    conf = config.get("evaluation", {})
    nums.put("cfg/iou_thres", Tex(f"{conf.get('iou_thres', 0.6):g}"))
    nums.put("cfg/conf_thres", Tex(f"{conf.get('conf_thres', 0.001):g}"))
    if str(_cfg(config, "data.split_scheme")) == "cv":
        n_folds = int(_cfg(config, "data.cv_folds"))
        nums.put("cfg/cv_folds", n_folds)
        nums.put(
            "cfg/cv_valid_pct",
            format_number(float(_cfg(config, "data.cv_valid_fraction")), 0, percent=True),
        )
        trained = [e for e in res.experiments.index if res.ran(e)
                   and not bool(res.row(e).get("per_fold_selection", False))]  # fmt: skip
        nums.put(
            "count/cv_trainings",
            n_folds * len(seeds) * sum(not res.study.is_split_variant(e) for e in trained),
        )


def _study_audit(audits: Mapping[str, dict], scheme: str) -> tuple[dict, list[str]]:
    """The audit of the partition the study evaluated on (under cv: the folds' test parts
    pooled) and the fold partitions."""
    fold_audits = [k for k in audits if cv_fold_of(k) is not None]
    study_audit = audits.get(scheme)
    if scheme == "cv" and fold_audits:
        study_audit = _pooled_fold_audit([audits[k] for k in fold_audits])
    if study_audit is None:
        raise ValueError(
            f"no audit for the split scheme the study used ({scheme!r}); got {list(audits)}"
        )
    return study_audit, fold_audits


def _data_numbers(audits: Mapping[str, dict], scheme: str, nums: _Numbers) -> dict[str, Any]:
    """Counts per partition, leakage, the majority view's share and the evaluated images."""
    study_audit, fold_audits = _study_audit(audits, scheme)
    counts, exact_views = dataset_counts(audits)
    for _, r in counts.iterrows():
        base = f"data/{r['Scheme']}/{r['Split']}"
        for col, key in (("Images", "images"), ("Patients", "patients"), ("Videos", "videos")):
            nums.put(f"{base}/{key}", int(r[col]))
    leak_info: list[dict] = []
    for _, r in leakage_rows(audits).iterrows():
        base = f"leak/{r['scheme']}/{r['split']}"
        nums.put(f"{base}/videos", int(r["n_videos_in_train"]))
        nums.put(f"{base}/videos_total", int(r["n_videos"]))
        nums.put(f"{base}/patients", int(r["n_patients_in_train"]))
        nums.put(f"{base}/patients_total", int(r["n_patients"]))
        nums.put(f"{base}/images_video", int(r["n_images_from_train_videos"]))
        nums.put(f"{base}/images_patient", int(r["n_images_from_train_patients"]))
        nums.put(f"{base}/images_total", int(r["n_images"]))
        share = r["n_images_from_train_videos"] / r["n_images"] if r["n_images"] else math.nan
        nums.put(f"{base}/images_video_pct", format_number(share, 1, percent=True))
        nums.put(f"{base}/identical", int(r["n_images_identical_to_train"]))
        leak_info.append(
            {
                "scheme": r["scheme"],
                "split": r["split"],
                "split_name": SPLIT_WORDS.get(r["split"], r["split"]),
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
    test_totals = study_audit["totals"].get("test", {})
    for key, value in test_totals.items():
        if scheme == "cv":
            nums.put(f"data/cv/test/{key.removeprefix('n_')}", int(value))
        # the images and patients the test metrics are computed on, whatever the protocol
        nums.put(f"data/eval/{key.removeprefix('n_')}", int(value))
    leak_scheme = "original" if "original" in audits else scheme
    source_audit = audits[leak_scheme]
    nums.put("data/n_defects", int(source_audit.get("n_defects", 0)))
    nums.put("data/missing_views", int(sum(source_audit["view_missing"].values())))
    return {
        "majority": majority,
        "exact_views": exact_views,
        "leak": leak_info,
        "leak_scheme": leak_scheme,
        "leak_scheme_name": protocol_name(leak_scheme),
        "leak_main": [d for d in leak_info if d["scheme"] == leak_scheme],
        "used_splits": ["train", "valid", "test"]
        if scheme == "cv"
        else list(study_audit["splits"]),
        "original_audit": "original" in audits,
    }


def _claims_numbers(claims: dict, res: Results, nums: _Numbers) -> dict[str, Any]:
    """The guide's numbers, and its decisive differences and ratios beside the measured ones."""
    rows = claims_rows(claims, res)
    for r in rows:
        nums.put(f"claim/{r['id']}", Tex(format_number(r["claimed"], r["digits"]) + r["suffix"]))
    map_claims = [r for r in rows if r["metric"] == "map50" and r["status"] == "measured"]
    nums.put("count/claims", len(rows))
    nums.put("count/claims_measured", sum(r["status"] == "measured" for r in rows))
    nums.put("count/map_claims", len(map_claims))
    nums.put("count/map_claims_below", sum(r["measured"] < r["claimed"] for r in map_claims))
    comparisons = []
    for r in comparison_rows(claims, res):
        base = f"claimcmp/{r['id']}"
        if r["kind"] == "ratio":
            nums.put(f"{base}/claimed", format_number(r["claimed"], 2))
            if r["status"] == "measured":
                nums.put(f"{base}/measured", format_number(r["measured"], 2))
        else:
            nums.put(f"{base}/claimed", format_number(r["claimed"], 3, signed=True))
            if r["status"] == "measured":
                d = interval_digits(r["low"], r["high"])
                nums.put(f"{base}/measured", format_number(r["measured"], d, signed=True))
                for k in ("low", "high"):
                    nums.put(f"{base}/{k}", format_small(r[k], d, signed=True))
                if not math.isnan(r["mdd"]):
                    nums.put(f"{base}/mdd", format_number(r["mdd"], 2))
        comparisons.append(
            {
                "id": r["id"], "key": base, "kind": r["kind"], "status": r["status"],
                "verdict": r["verdict"], "of": r["of"], "over": r["over"],
                "claim_inside": r["status"] == "measured" and r["kind"] == "difference"
                and r["low"] <= r["claimed"] <= r["high"],
            }
        )  # fmt: skip
    return {
        "claim_comparisons": comparisons,
        "decisive": next((c for c in comparisons if c["kind"] == "difference"), None),
        "source_view_order": list(claims.get("facts", {}).get("source_view_order", [])),
        "source_view_order_where": claims.get("facts", {}).get("source_view_order_where", ""),
        "claims_bibkey": claims["source"].get("bibkey", "seedguide"),
    }


def _diagnostics_numbers(diagnostics: pd.DataFrame | None, nums: _Numbers) -> dict[str, Any]:
    """Per shared-trunk configuration and scope: the medians, the null reference, and the reading
    of :func:`~echomtl.report.reading.interference_reading` (stated in the paper with its rule)."""
    rows: list[dict] = []
    if diagnostics is not None and not diagnostics.empty:
        agg = diagnostics_by_configuration(diagnostics)
        for (exp, scope), r in agg.iterrows():
            base = f"diag/{exp}/{scope}"
            reading = interference_reading(
                float(r["frac_negative"]), int(r["n"]), float(r["share"])
            )
            nums.put(f"{base}/median_cosine", format_small(r["median_cosine"]))
            nums.put(f"{base}/frac_negative", format_number(r["frac_negative"], 0, percent=True))
            nums.put(f"{base}/neg_low", format_number(reading.negative_low, 0, percent=True))
            nums.put(f"{base}/neg_high", format_number(reading.negative_high, 0, percent=True))
            nums.put(f"{base}/n_steps", int(r["n"]))
            nums.put(f"{base}/norm_ratio", format_number(10 ** r["ratio"], 1))
            nums.put(f"{base}/wnorm_ratio", format_number(10 ** r["wratio"], 1))
            nums.put(f"{base}/share_det", format_share(r["share"]))
            nums.put(f"{base}/null_cosine", format_small(r["null"]))
            rows.append(
                {
                    "exp": exp, "scope": scope, "key": base,
                    "direction": reading.direction, "dominant": reading.dominant,
                    "conflict": bool(r["median_cosine"] < 0),
                    "mostly_negative": bool(r["frac_negative"] > 0.5),
                }
            )  # fmt: skip
    for scope in ("W", "trunk"):
        part = [d for d in rows if d["scope"] == scope]
        nums.put(f"count/diag_{scope}", len(part))
        nums.put(f"count/diag_{scope}_negative", sum(d["conflict"] for d in part))
        nums.put(f"count/diag_{scope}_mostly_negative", sum(d["mostly_negative"] for d in part))
        for direction in ("conflict", "agreement", "undecided"):
            nums.put(
                f"count/diag_{scope}_{direction}", sum(d["direction"] == direction for d in part)
            )
        nums.put(
            f"count/diag_{scope}_det_dominant", sum(d["dominant"] == "detection" for d in part)
        )
    nums.put("rule/dominance_share", format_number(DOMINANCE_SHARE, 0, percent=True))
    return {"diag": rows, "diag_by": {(d["exp"], d["scope"]): d for d in rows}}


def _phase_numbers(
    phases: pd.DataFrame | None, nums: _Numbers, control_w_det: float
) -> dict[str, Any]:
    """The reference's weights by phase, and its mean detection step against ``control_w_det``
    (fixed weights' w_det): what the renormalisation does to the detection step."""
    rows, step = [], None
    if phases is not None and not phases.empty:
        overall = float(phases.set_index("phase").loc["Overall", "weight_det"])
        step = detection_step_reading(overall, control_w_det)
        nums.put("phase/Overall/step_change",
                 format_number(abs(overall / control_w_det - 1.0), 0, percent=True))  # fmt: skip
        nums.put("cfg/control_w_det", Tex(f"{control_w_det:g}"))
        nums.put("rule/step_tolerance", format_number(STEP_TOLERANCE, 0, percent=True))
        for _, r in phases.iterrows():
            base = f"phase/{r['phase']}"
            nums.put(f"{base}/weight_det", format_number(r["weight_det"]))
            nums.put(f"{base}/weight_cls", format_number(r["weight_cls"]))
            nums.put(f"{base}/ratio", format_number(r["ratio"], 1))
            rows.append({"phase": r["phase"], "key": base})
    text = _listing([Tex(f"{latex_escape(n)} ({_span(s, e)})") for n, s, e in PHASES])
    return {"phases": rows, "phase_definition": text, "detection_step": step}


def _failures(
    res: Results,
    majority: float,
    split_pairs: list[dict],
    start: dict[str, Any],
    help_: _Helpers,
) -> dict[str, Any]:
    """Failed runs (:func:`failure_reasons`) and what they make unreadable, and the axis
    differences that run against their expectation (:func:`against_expectation`); marks each
    split and start pair with ``failed`` (its failed runs) and ``against`` in place."""
    failed: dict[str, list[str]] = {}
    for e in res.study.names:
        if not res.ran(e):
            continue
        ci = res.interval(e, "map50")
        high = float(ci["high"]) if ci else math.nan
        reasons = failure_reasons(high, res.get(e, "view_accuracy"), majority)
        if reasons:
            failed[e] = reasons
    for p in split_pairs:
        p["failed"] = [e for e in (p["study"], p["variant"]) if e in failed]
        s, t = p["splits"][0] if p["splits"] else ("test", "test")
        diff = res.get(p["variant"], "map50", s) - res.get(p["study"], "map50", t)
        p["against"] = against_expectation(diff, "split")
    for p in start["pairs"]:
        p["failed"] = [e for e in (p["study"], p["variant"]) if e in failed]
        axis = f"init_{res.row(p['variant'])['init']}"
        p["against"] = against_expectation(
            res.get(p["variant"], "map50") - res.get(p["study"], "map50"), axis
        )
    aug = res.study.augmentation_variant
    aug_failed = [e for e in (res.reference, aug) if aug is not None and e in failed]
    words = {"detection": "detection", "view": "views"}
    listing = _listing([
        Tex(f"{help_.lname(e)} (on {' and '.join(words[r] for r in rs)})")
        for e, rs in failed.items()
    ])  # fmt: skip
    return {"failed": failed, "failed_list": listing, "aug_failed": aug_failed}


def _interference_numbers(records: Sequence[Mapping[str, Any]], nums: _Numbers) -> dict[str, Any]:
    """The accumulated-gradient interference (``evaluation.interference``): per run and point,
    the task cosine, its null band and the weighted-norm ratio as numbers, and the readings as
    the ``accumulated`` section (empty without measurements)."""
    runs = []
    for r in records:
        e = r["experiment"]
        points = []
        for point, m in r["points"].items():
            k = f"acc/{e}/{point}"
            # three decimals: a cosine just beyond its band must not print as equal to it
            nums.put(f"{k}/cosine", format_small(m["cosine"], 3, signed=True))
            nums.put(f"{k}/null_high", format_small(m["null_high"], 3))
            nums.put(f"{k}/ratio", format_number(m["weighted_norm_ratio"], 1))
            nums.put(f"{k}/step", int(m["step"]))
            points.append({"point": point, "reading": m["reading"]})
        runs.append({"exp": e, "points": points})
    if records:
        nums.put("acc/n_images", int(records[0]["n_images"]))
        nums.put("acc/batch_size", int(records[0]["batch_size"]))
        readings = [p["reading"] for r in runs for p in r["points"]]
        nums.put("count/acc_points", len(readings))
        conflict, alignment, _ = INTERFERENCE_WORDS
        nums.put("count/acc_outside", sum(w in (conflict, alignment) for w in readings))
        nums.put("count/acc_conflict", sum(w == conflict for w in readings))
    return {"accumulated": runs, "point_words": POINT_WORDS}


def _sharing_numbers(res: Results, nums: _Numbers) -> dict[str, Any]:
    """The paper's first question (``evaluation.sharing``): per task, the cost of sharing and
    its reading, then each main method's gain and fraction recovered, as numbers and as the
    ``sharing`` section (``{"tasks": [...], "methods": [...]}``; None without the file)."""
    if res.sharing is None:
        return {"sharing": None}
    methods = res.recovery_rows()
    tasks = []
    for metric, part in res.sharing["metrics"].items():
        cost = part["cost"]
        base = f"sharing/{metric}"
        digits = interval_digits(cost["low"], cost["high"])
        for key in ("diff", "low", "high"):
            nums.put(f"{base}/cost/{key}", format_small(cost[key], digits, signed=True))
        nums.put(f"{base}/isolated", format_number(part["isolated_value"], digits))
        nums.put(f"{base}/shared", format_number(part["shared_value"], digits))
        recovered, ref_fraction = [], False
        for m in methods:
            fraction = part["methods"][m]["fraction"]
            if fraction is None:
                continue
            for key in ("point", "low", "high"):
                nums.put(f"{base}/{m}/fraction/{key}", format_small(fraction[key], 2))
            recovered.append({"exp": m, "reading": fraction["reading"]})
            ref_fraction = ref_fraction or m == res.reference
        tasks.append({
            "metric": metric,
            "ref_fraction": ref_fraction,
            "isolated": part["isolated"],
            "reading": cost["reading"],
            "recovered": recovered,
        })  # fmt: skip
    changes = []
    for run in [res.sharing["shared"], *methods]:
        entry = res.sharing.get("delta_m", {}).get(run)
        if not entry or entry["point"] is None:
            continue
        for key in ("point", "low", "high"):
            nums.put(f"sharing/delta_m/{run}/{key}", format_number(entry[key], 1, signed=True))
        changes.append({"exp": run, "reading": entry["reading"]})
    return {"sharing": {"tasks": tasks, "methods": methods, "shared": res.sharing["shared"],
                        "delta_m": changes}}  # fmt: skip


def _split_numbers(res: Results, audits: Mapping[str, dict], nums: _Numbers) -> list[dict]:
    """The split axis: the study's split against the export's, per evaluation split."""
    for r in split_rows(res, audits):
        key = f"split/{r['experiment']}/{r['split']}"
        for m in AXIS_METRICS:
            if not math.isnan(r[m]):
                nums.put(f"{key}/{m}", format_number(r[m]))
        nums.put(f"{key}/leak_pct", format_number(r["n_from_train_videos"] / r["n_images"], 1,
                                                  percent=True))  # fmt: skip
    pairs = []
    for study_run, variant in res.study.split_pairs:
        both = [s for s in ("valid", "test")
                if all(res.has(e, "map50", s) for e in (study_run, variant))]  # fmt: skip
        # (variant's split, study run's split): the same split name where both have it, else
        # the variant's validation split beside the study's (pooled) test set
        compared = [(s, s) for s in both]
        if not compared and res.has(variant, "map50", "valid") and res.has(study_run, "map50"):
            compared = [("valid", "test")]
        for s, t in compared:
            for m in TASK_METRICS:
                a, b = res.get(variant, m, s), res.get(study_run, m, t)
                if not (math.isnan(a) or math.isnan(b)):
                    nums.put(f"splitdiff/{variant}/{s}/{m}", format_number(a - b, signed=True))
        for e in (study_run, variant):
            if res.has(e, "n_steps", "train") and f"steps/{e}" not in nums:
                nums.put(f"steps/{e}", int(res.mean(e, "n_steps", "train")))
        pairs.append(
            {
                "steps": (
                    nums[f"steps/{study_run}"] == nums[f"steps/{variant}"]
                    if all(f"steps/{e}" in nums for e in (study_run, variant))
                    else None
                ),
                "study": study_run,
                "variant": variant,
                "scheme": protocol_name(str(res.row(study_run)["split"])),
                "variant_scheme": protocol_name(str(res.row(variant)["split"])),
                "splits": compared,
                "variant_splits": [s for s in ("valid", "test") if res.has(variant, "map50", s)],
                "classifier": res.has_classifier(variant),
            }
        )
    return pairs


def _start(res: Results, checkpoint: Mapping[str, Any] | None, nums: _Numbers) -> dict[str, Any]:
    """The study's start, the checkpoint's provenance, and the configurations run from both."""
    study = res.study.start
    if study == "pretrained" or any(str(i) == "pretrained" for i in res.experiments["init"]):
        if not checkpoint:
            raise ValueError("runs started from a checkpoint, but the paper was given none")
    pairs = []
    for study_run, variant in res.study.init_pairs:
        for m in TASK_METRICS:
            a, b = res.get(study_run, m), res.get(variant, m)
            if not (math.isnan(a) or math.isnan(b)):
                nums.put(f"initdiff/{variant}/{m}", format_number(a - b, signed=True))
        pairs.append(
            {"study": study_run, "variant": variant, "classifier": res.has_classifier(variant)}
        )
    info = None
    if checkpoint:
        info = {
            "file": latex_escape(str(checkpoint["file"])),
            "sha256": str(checkpoint["sha256"]),
            "date": latex_escape(str(checkpoint.get("date") or "undated")),
            "tensors": int(checkpoint["tensors"]),
        }
    return {"study": study, "other": "scratch" if study == "pretrained" else "pretrained",
            "pairs": pairs, "checkpoint": info}  # fmt: skip


def _device_words(device: str) -> str:
    """The training device in words (never the config value)."""
    if device == "cpu":
        return "CPU cores"
    if device.startswith("cuda") or device.isdigit():
        return "a GPU"
    return f"the {device} device"


def _comparisons_text(res: Results, has: Mapping[str, bool], roles: dict) -> Tex:
    """The introduction's list of what GradNorm is compared with."""
    comparisons: list[Any] = []
    if has["fixed"] and has["manual"]:
        comparisons.append("fixed and manually tuned weights")
    elif has["fixed"] or has["manual"]:
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
            Tex(f"gradient aggregators from the torchjd library~"
                f"\\citep{{quinton2024jacobian}} ({names})")
        )  # fmt: skip
    if not comparisons:
        comparisons.append("no other configuration (only the reference ran)")
    return _listing(comparisons)


def _version_text(name: str, version: Mapping[str, str | None]) -> str:
    """``name installed``; a version other than the pin, or a missing package, says so."""
    pinned, installed = version.get("pinned"), version.get("installed")
    text = f"{latex_escape(name)} {latex_escape(str(installed or 'not installed'))}"
    if pinned is not None and installed != pinned:
        text += f" \\textbf{{(pinned {latex_escape(pinned)})}}"
    return text


def _hardware_text(hw: Mapping[str, Any]) -> str:
    """``CPU model, N cores`` (those the process could use), torch's threads when recorded and
    the GPU's name when there was one. Reads a description written before the keys were named
    for what they hold (``cpu``, ``cores``, ``gpu``) too: an older record or archive."""
    cpu = hw.get("cpu_model", hw.get("cpu"))
    cores = hw.get("cpu_cores", hw.get("cores"))
    gpu = hw.get("gpu_name", hw.get("gpu"))
    text = f"{latex_escape(str(cpu))}, {cores} core{'s' if cores != 1 else ''}"
    threads = hw.get("torch_threads")
    if threads is not None:
        text += f", {threads} torch thread{'s' if threads != 1 else ''} per job"
    return text + (f"; GPU {latex_escape(str(gpu))}" if gpu else "")


def _machines_text(machines: Sequence[Mapping[str, Any]]) -> str:
    """One machine, or each machine with the epochs it ran (a study spread over nodes)."""
    if len(machines) == 1:
        return _hardware_text(machines[0])
    return "; ".join(
        f"{_hardware_text(m)} ({_count(m['epochs'], 'epoch')} of {_count(m['runs'], 'run')})"
        for m in machines
    )


def _count(n: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _recorded_text(training: Mapping[str, Any]) -> str | None:
    """The machines of a ``training`` entry (``machines``, ``unrecorded_runs``: the provenance
    record's, or an archive's ``made_on``), counting the runs that recorded none; None when no
    run recorded its machine."""
    machines = list(training.get("machines") or [])
    if not machines:
        return None
    text = _machines_text(machines)
    unrecorded = int(training.get("unrecorded_runs") or 0)
    if unrecorded:
        its = "its" if unrecorded == 1 else "theirs"
        text += f" ({_count(unrecorded, 'run')} did not record {its})"
    return text


def _made_on_text(made_on: Any) -> str | None:
    """An archive's training machines: ``{"machines", "unrecorded_runs"}``, or, from an archive
    made before the runs recorded their machines, the one machine its record was written on."""
    if not made_on:
        return None
    if "machines" in made_on:
        return _recorded_text(made_on)
    return _hardware_text(made_on)


def _training_hardware(record: Mapping[str, Any] | None) -> str:
    """The machines the runs trained on, as the training processes recorded them (the archive's
    runs, for results unpacked from one). Runs that recorded none (trained before the record
    existed) are counted, and if none did, the machine that wrote the record is named as such."""
    if not record:
        return "not recorded"
    origin = record.get("results_origin") or {}
    if origin:
        return _made_on_text(origin.get("made_on")) or "not recorded (an archive without it)"
    text = _recorded_text(record.get("training") or {})
    if text is None:
        return (
            f"not recorded by the runs (trained before they recorded it); this record was "
            f"written on {_hardware_text(record['hardware'])}"
        )
    return text


def _origin_text(origin: Mapping[str, Any] | None) -> str:
    """Where the runs' results came from: this build, or an unpacked results archive."""
    if not origin:
        return "trained and evaluated by this build"
    commit = origin.get("commit")
    made = f"at commit \\texttt{{{commit[:12]}}}" if commit else "at an unknown commit"
    if commit and origin.get("dirty"):
        made += " with uncommitted changes"
    made_on = _made_on_text(origin.get("made_on"))
    machine = f" on {made_on}" if made_on else ""
    return (
        f"unpacked from the results archive {latex_escape(origin['archive'])} (SHA-256 "
        f"\\texttt{{{str(origin['sha256'])[:16]}}}), made {made}{machine}; this build "
        "rebuilt the paper from it without training"
    )


def _hardware_rows(record: Mapping[str, Any]) -> str:
    """Where the runs trained and, when it differs (a cluster's report node, an unpacked
    archive), where this record and the paper were built."""
    trained = _training_hardware(record)
    origin = record.get("results_origin") or {}
    recorded = (origin.get("made_on") or {}) if origin else (record.get("training") or {})
    if not origin and not recorded.get("machines"):
        return trained  # no run recorded its machine: the text names the record's, as such
    same = {k: record["hardware"].get(k) for k in ("cpu_model", "cpu_cores", "gpu_name")}
    machines = [
        {k: m.get(k) for k in ("cpu_model", "cpu_cores", "gpu_name")}
        for m in recorded.get("machines") or []
    ]
    if machines == [same]:
        return f"{trained}; the paper was built on the same machine"
    return f"training: {trained}; this record and the paper: {_hardware_text(record['hardware'])}"


def _provenance(record: Mapping[str, Any]) -> dict[str, Any]:
    """The reproducibility appendix's rows, as LaTeX-safe text: what produced this build."""
    git, data = record["git"], record["dataset"]
    if git.get("commit") is None:
        code = "not a git checkout: the commit is unknown"
    else:
        code = f"\\texttt{{{git['commit'][:12]}}}"
        if git.get("dirty"):
            changed = int(git.get("changed", 0))
            code += (
                f", \\textbf{{with uncommitted changes}} ({_count(changed, 'path')} "
                f"{'differs' if changed == 1 else 'differ'} from the commit)"
            )
        else:
            code += ", clean tree"
    software = ", ".join(_version_text(name, v) for name, v in record["versions"].items())
    seconds = float(record["training"]["seconds"])
    hours = seconds / 3600.0
    duration = f"{hours:.1f}\\,h" if hours >= 1 else f"{seconds / 60.0:.1f}\\,min"
    checkpoint = record.get("checkpoint")
    start = "none (random weights)"
    if checkpoint:
        digest = str(checkpoint["sha256"])[:16]
        start = f"{latex_escape(checkpoint['file'])} SHA-256 \\texttt{{{digest}}}"
    rows = [
        ("Code", code),
        ("Configuration", f"SHA-256 \\texttt{{{record['config_sha256'][:16]}}}"),
        ("Software", software),
        ("Hardware", _hardware_rows(record)),
        ("Data", f"export fingerprint \\texttt{{{data['export_fingerprint'][:16]}}}; "
                 f"{latex_escape(data['records'])} SHA-256 \\texttt{{{data['sha256'][:16]}}}"),
        ("Checkpoint", start),
        ("Training", f"{duration} of wall time over {record['training']['runs']} runs"),
        ("Results", _origin_text(record.get("results_origin"))),
    ]  # fmt: skip
    return {"rows": [(Tex(k), Tex(v)) for k, v in rows], "dirty": bool(git.get("dirty"))}


#: The largest relative SD of one method's step times (over its seeds) within which the paper
#: compares methods' step times as ratios; above it, a ratio would read the machine's load as much
#: as the method (a machine shared with other work).
COST_RATIO_SPREAD = 0.10


def _cost(res: Results, roles: Mapping[str, Any], nums: _Numbers) -> dict[str, Any]:
    """The cost section: whether the runs measured their cost, and how many times as long as
    fixed weights' each other method's optimizer step took (the table has the rest)."""
    from echomtl.report.tables import cost_value

    def any_measured(metric: str) -> bool:
        return any(
            not math.isnan(cost_value(res, res.chosen[g], metric)[0]) for g in res.study.main_groups
        )

    measured = any_measured("seconds_per_step")
    ratios = []
    fixed = roles.get("fixed")
    base = cost_value(res, fixed, "seconds_per_step")[0] if fixed else math.nan
    # one method's runs disagreeing by more than COST_RATIO_SPREAD: no ratio is stated
    spreads = {}
    for g in res.study.main_groups:
        mean, sd = cost_value(res, res.chosen[g], "seconds_per_step")
        if not math.isnan(sd) and mean > 0:
            spreads[res.chosen[g]] = sd / mean
    noisy = max(spreads, key=spreads.__getitem__) if spreads else None
    if noisy is not None and spreads[noisy] <= COST_RATIO_SPREAD:
        noisy = None
    nums.put("cost/ratio_spread_pct", format_number(100 * COST_RATIO_SPREAD, 0))
    if noisy is not None:
        nums.put("cost/spread_pct", format_number(100 * spreads[noisy], 0))
    if measured and noisy is None and not math.isnan(base) and base > 0:
        for g in res.study.main_groups:
            exp = res.chosen[g]
            value = cost_value(res, exp, "seconds_per_step")[0]
            if exp == fixed or math.isnan(value):
                continue
            nums.put(f"cost/{exp}/step_ratio", format_number(value / base, 2))
            ratios.append({"exp": exp, "key": f"cost/{exp}/step_ratio"})
    # the caption names CUDA's column when the table has one: both follow the runs' files
    return {
        "cost": {
            "measured": measured,
            "ratios": ratios,
            "noisy": noisy,
            "cuda": any_measured("cuda_peak_mib"),
        }
    }


def build_context(
    res: Results,
    config: Mapping[str, Any],
    audits: Mapping[str, PathLike | dict],
    claims_yaml: PathLike,
    files: Mapping[str, Any],
    diagnostics: pd.DataFrame | None = None,
    phases: pd.DataFrame | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    interference: Sequence[Mapping[str, Any]] = (),
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Collect what ``paper/main.tex.j2`` needs (see module docstring), one section at a time.

    Args:
        res: the loaded results (:func:`echomtl.report.results.load_results`).
        config: the validated workflow config (``data``, ``model``, ``train``, ``seeds``, ...).
        audits: ``{partition: audit.json}``; the study's partitions (each cv fold's) and
            ``original`` (when present), the export's own split, whose leakage the Limitations
            section reports.
        claims_yaml: ``paper/claims.yaml``.
        files: ``{"numbers": path, "bibliography": path, "tables": {name: path},
            "figures": {name: path}}`` (names: the registry, :mod:`echomtl.report.outputs`).
        diagnostics: :func:`echomtl.report.summaries.diagnostics_summary` of the shared-trunk runs.
        phases: :func:`echomtl.report.summaries.weight_phases` of the reference's steps.
        checkpoint: the pretrained start's file (``file``, ``sha256``, ``date``, ``tensors``,
            ``model_class``) when any run started from it, read at parse time.
        interference: the accumulated-gradient measurements (``stats/interference/*.json``).
        provenance: ``provenance.json`` (:mod:`echomtl.report.provenance`): the appendix.
    """
    nums = _Numbers()
    ref = res.reference
    ref_row = res.row(ref)
    roles = _roles(res)
    alphas, aug = res.study.alpha_variants, res.study.augmentation_variant
    audits = {k: (v if isinstance(v, dict) else load_audit(v)) for k, v in audits.items()}
    scheme = str(_cfg(config, "data.split_scheme"))
    seeds = [str(s) for s in _cfg(config, "seeds")]

    time_name = _result_numbers(res, nums)
    selection_ties = _selection_numbers(res, nums)
    help_ = _Helpers(res, nums)
    verdicts = _verdicts(res, help_, nums, roles)
    _config_numbers(config, nums, ref_row, res)
    data = _data_numbers(audits, scheme, nums)
    claims = _claims_numbers(load_claims(claims_yaml), res, nums)
    diag = _diagnostics_numbers(diagnostics, nums)
    control = roles["fixed"] if roles.get("fixed") else ref  # no fixed run: its start
    phase = _phase_numbers(phases, nums, float(res.row(control)["w_det"]))
    split_pairs = _split_numbers(res, audits, nums)
    start = _start(res, checkpoint, nums)
    sharing = _sharing_numbers(res, nums)
    accumulated = _interference_numbers(interference, nums)
    cost = _cost(res, roles, nums)

    if res.study.flags["diagnostics"] and not diag["diag"]:
        raise ValueError("the study has shared-trunk runs, but their diagnostics have no rows")
    # what the study has is its plan's (echomtl.study); the rest is known only from its files
    has = {
        **res.study.flags,
        "synthetic": _cfg(config, "data.source") == "synthetic",
        "view_order_differs": bool(claims["source_view_order"])
        and claims["source_view_order"] != list(_cfg(config, "data.view_names")),
        "exact_view_counts": data["exact_views"],
        "original_audit": data["original_audit"],
        "ema": bool(config["train"].get("ema", True)),
    }
    front = _front(res, nums)
    map_highs = [res.interval(e, "map50")["high"] for e in verdicts["main_exps"]
                 if res.interval(e, "map50")]  # fmt: skip
    has["detection_learned"] = detection_learned(map_highs)
    nums.put("rule/detection_floor", format_number(DETECTION_FLOOR, 2))
    nums.put("rule/family_level", format_number(FAMILY_LEVEL, 2))
    nums.put("rule/small_class_boxes", SMALL_CLASS_BOXES)
    if map_highs:
        nums.put("max/map50_high", format_number(max(map_highs)))
    failures = _failures(res, data["majority"], split_pairs, start, help_)
    view_ci = res.interval(ref, "view_accuracy")
    view_vs_majority = (
        versus_majority(view_ci["low"], view_ci["high"], data["majority"])
        if view_ci is not None and not math.isnan(data["majority"])
        else None
    )
    _check_files(files, res)

    own = {
        "numbers": dict(nums),
        "files": dict(files),
        "has": has,
        "view_vs_majority": view_vs_majority,
        "front": front,
        "ref": ref,
        "ref_label": help_.labels[ref],
        "roles": roles,
        "main": [
            {
                "group": g,
                "exp": res.chosen[g],
                "label": res.group_label(g),
                "is_ref": res.chosen[g] == ref,
            }
            for g in res.study.main_groups
        ],
        "comparisons_text": _comparisons_text(res, has, roles),
        "alphas": alphas,
        "alpha_others": [e for e in alphas if e != ref and help_.comparable(e)],
        "aug": aug,
        "manual_group": res.row(roles["manual"])["group"] if roles["manual"] else None,
        "selection_definition": latex_escape(
            score_definition(
                config["report"].get("selection_metric", "mean_map50_accuracy"), len(seeds)
            )
        ),
        "split_pairs": split_pairs,
        "start": start,
        "renormalise": str(_cfg(config, "balancing.gradnorm.renormalise")),
        "warmup": {
            "epochs": float(_cfg(config, "train.hyp.warmup_epochs")),
            "floor": int(config["train"].get("warmup_min_iterations", 100)),
        },
        "scheme_name": protocol_name(scheme),
        "scheme": scheme,
        "seeds": seeds,
        "decisive_seeds": [str(s) for s in res.study.decisive_seeds] if res.study.decisive else [],
        # the decisive runs, with the chosen configuration of a decisive grid (Study.seeds_of)
        "decisive_runs": [
            *res.study.decisive,
            *(res.chosen[g] for g in res.study.decisive_grids if g in res.chosen),
        ],
        # a decisive grid: chosen on the seeds every point ran, then the chosen point's extra seeds
        "grid_decisive": next(
            (
                {
                    "choice_seeds": [str(k) for k in res.selections[g].get("seeds", [])],
                    "extra_seeds": [str(k) for k in res.study.decisive_seeds],
                }
                for g in res.study.decisive_grids
                if g in res.selections
            ),
            None,
        ),
        "front_optimal": res.front_optimal,
        "alpha_chosen": res.alpha_chosen,
        # under cv: each fold's choice; the choice is the pre-set alpha when every fold chose it
        "alpha_per_fold": bool(res.alpha_chosen and res.fold_choices(res.alpha_chosen)),
        "alpha_some_ref": res.reference in res.fold_choices(res.alpha_chosen or res.reference),
        "alpha_is_ref": bool(res.alpha_chosen)
        and set(res.fold_choices(res.alpha_chosen) or [res.alpha_chosen]) == {res.reference},
        "view_names": [str(v) for v in _cfg(config, "data.view_names")],
        "class_names": [str(c) for c in _cfg(config, "data.class_names")],
        "time_unit": time_name,
        "device_words": _device_words(str(config["train"].get("device", "cpu"))),
        "examples_rule": latex_escape(DETECTION_EXAMPLES_RULE),
        "split_words": SPLIT_WORDS,
        "selection_ties": selection_ties,
        "provenance": _provenance(provenance) if provenance else None,
        "hardware": _training_hardware(provenance),
    }
    return _merge(
        own,
        verdicts,
        data,
        claims,
        diag,
        phase,
        sharing,
        failures,
        accumulated,
        cost,
        help_.context(),
    )
