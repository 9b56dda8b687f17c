"""Queries: the study's files read into plain frames and rows that tables, figures and the paper's
numbers share (renderers only render).

- audits: :func:`dataset_counts`, :func:`leakage_rows`, scheme and protocol names;
- the split axis: :func:`split_rows`;
- the seed guide's claims (``paper/claims.yaml``): :func:`load_claims`, :func:`claims_rows`,
  :func:`comparison_rows` (the guide's differences and ratios against the measured ones) and
  :func:`claimed_differences` (for the forest plot).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import yaml

from echomtl.atomic import PathLike
from echomtl.data.splits import cv_fold_of
from echomtl.evaluation.vocabulary import AXIS_METRICS
from echomtl.report.results import Results
from echomtl.report.summaries import load_audit

__all__ = [
    "SPLIT_WORDS",
    "SCHEME_LABELS",
    "PROTOCOL_NAMES",
    "UNITS",
    "dataset_counts",
    "leakage_rows",
    "protocol_name",
    "scheme_label",
    "split_rows",
    "time_unit",
    "load_claims",
    "claims_rows",
    "comparison_rows",
    "claimed_differences",
    "selection_margins",
]


#: how the text names the splits (never the config value)
SPLIT_WORDS = {"test": "test", "valid": "validation", "train": "training", "model": "model"}


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _audits(audits: Mapping[str, PathLike | dict]) -> dict[str, dict]:
    if not audits:
        raise ValueError("no audit given")
    return {k: (v if isinstance(v, dict) else load_audit(v)) for k, v in audits.items()}


def dataset_counts(audits: Mapping[str, PathLike | dict]) -> tuple[pd.DataFrame, bool]:
    """Counts per (scheme, split): images, patients, videos, boxes per class, images per view.

    Returns ``(frame, exact_views)``; ``exact_views`` is False when some image holds boxes of
    several classes, in which case per-view image counts count such an image once per class.
    """
    rows = []
    exact = True
    for scheme, audit in _audits(audits).items():
        counts = pd.DataFrame(audit["counts"])
        classes = [c for c in audit["class_names"]]
        extra = sorted(set(counts["class"]) - set(classes) - {"none"}) if len(counts) else []
        views = list(audit["view_names"]) + ["missing"]
        for split in audit["splits"]:
            tot = audit["totals"][split]
            part = counts[counts["split"] == split] if len(counts) else counts
            row: dict[str, Any] = {
                "Scheme": scheme,
                "Split": split,
                "Images": tot["n_images"],
                "Patients": tot["n_patients"],
                "Videos": tot["n_videos"],
            }
            for c in classes + extra:
                row[c] = int(part.loc[part["class"] == c, "n_boxes"].sum()) if len(part) else 0
            for v in views:
                row[f"view:{v}"] = (
                    int(part.loc[part["view"] == v, "n_images"].sum()) if len(part) else 0
                )
            if sum(row[f"view:{v}"] for v in views) != tot["n_images"]:
                exact = False
            rows.append(row)
    return pd.DataFrame(rows), exact


#: how the tables name split schemes and partitions (never the config value)
SCHEME_LABELS = {
    "original": "export's split",
    "grouped": "grouped holdout",
    "cv": "cross-validation (pooled)",
}


#: how the text names the protocols (``data.split_scheme`` values)
PROTOCOL_NAMES = {
    "original": "export's own split",
    "grouped": "patient-grouped holdout",
    "cv": "patient-grouped cross-validation",
}


def protocol_name(scheme: str) -> str:
    """The words for a split scheme in running text."""
    return PROTOCOL_NAMES.get(scheme, scheme_label(scheme))


def scheme_label(name: str) -> str:
    """Display name of a split scheme or partition: ``cv-fold0`` is "CV fold 1"."""
    fold = cv_fold_of(name)
    return f"CV fold {fold + 1}" if fold is not None else SCHEME_LABELS.get(name, name)


def leakage_rows(audits: Mapping[str, PathLike | dict]) -> pd.DataFrame:
    """Leakage per (scheme, evaluation split) with the count of byte-identical train images."""
    rows = []
    for scheme, audit in _audits(audits).items():
        dups = audit.get("duplicates", [])
        for leak in audit["leakage"]:
            split = leak["split"]
            n_dup = sum(1 for d in dups if {d["split_a"], d["split_b"]} == {"train", split})
            rows.append({"scheme": scheme, **leak, "n_images_identical_to_train": n_dup})
    frame = pd.DataFrame(rows)
    folds = frame[frame["scheme"].map(lambda n: cv_fold_of(n) is not None)] if rows else frame
    test = folds[folds["split"] == "test"] if len(folds) else folds
    if len(test):  # the pooled cross-validation test set: the folds' test parts together
        pooled = test.drop(columns=["scheme", "split"]).sum(numeric_only=True)
        frame = pd.concat(
            [frame, pd.DataFrame([{"scheme": "cv", "split": "test", **pooled.to_dict()}])],
            ignore_index=True,
        )
    return frame


def time_unit(seconds: Iterable[float]) -> tuple[str, float]:
    """A readable unit for a column of durations: ``("min", 60)`` or ``("h", 3600)``."""
    finite = [s for s in seconds if not _isnan(s)]
    return ("h", 3600.0) if finite and max(finite) >= 2 * 3600 else ("min", 60.0)


def split_rows(res: Results, audits: Mapping[str, PathLike | dict]) -> list[dict[str, Any]]:
    """Per split pair, run and evaluation split: the scheme, the leakage of that evaluation
    split (images from training videos, from its scheme's audit) and the metrics (seed means)."""
    leak = leakage_rows(audits)
    rows = []
    for pair in res.study.split_pairs:
        for exp in pair:
            scheme = str(res.row(exp)["split"])
            for split in ("valid", "test"):
                if not res.has(exp, "map50", split):
                    continue
                found = leak[(leak["scheme"] == scheme) & (leak["split"] == split)]
                if found.empty:
                    raise ValueError(f"split table: no {scheme!r} audit of the {split} split")
                audit = found.iloc[0]
                rows.append(
                    {
                        "experiment": exp,
                        "pair": pair[0],
                        "scheme": scheme,
                        "split": split,
                        "n_images": int(audit["n_images"]),
                        "n_from_train_videos": int(audit["n_images_from_train_videos"]),
                        **{m: res.get(exp, m, split) for m in AXIS_METRICS},
                    }
                )
    return rows


UNITS = {
    "value": (1.0, ""),
    "percent": (1.0, "\\%"),
    "millions": (1e-6, "M"),
    "hours": (1 / 3600.0, "h"),
}


def load_claims(path: PathLike) -> dict:
    """Read ``paper/claims.yaml`` (the guide's numbers, each with its source), checking it."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict) or "claims" not in data or "source" not in data:
        raise ValueError(f"{path}: expected keys 'source' and 'claims'")
    for i, c in enumerate(data["claims"]):
        for key in ("id", "quantity", "claimed", "where", "measured"):
            if key not in c:
                raise ValueError(f"{path}: claim #{i + 1} lacks {key!r}")
        if c.get("unit", "value") not in UNITS:
            raise ValueError(f"{path}: claim {c['id']}: unknown unit {c.get('unit')!r}")
        if c.get("compare", "value") not in ("value", "ratio"):
            raise ValueError(f"{path}: claim {c['id']}: compare must be 'value' or 'ratio'")
    ids = {c["id"] for c in data["claims"]}
    for i, c in enumerate(data.get("comparisons", [])):
        for key in ("id", "quantity", "of", "over", "kind"):
            if key not in c:
                raise ValueError(f"{path}: comparison #{i + 1} lacks {key!r}")
        if c["kind"] not in COMPARISON_KINDS:
            raise ValueError(
                f"{path}: comparison {c['id']}: kind {c['kind']!r}, expected one of "
                f"{', '.join(COMPARISON_KINDS)}"
            )
        for side in ("of", "over"):
            if c[side] not in ids:
                raise ValueError(f"{path}: comparison {c['id']}: {side} {c[side]!r} is no claim id")
    return data


#: how the guide's two numbers are compared: ``of - over`` against the paired difference of the
#: measured runs (with its interval), or ``of / over`` (hardware- or scale-bound quantities,
#: whose absolute values cannot be compared across machines) against the ratio of seed means
COMPARISON_KINDS = ("difference", "ratio")


def _claimed_run(claim: dict, chosen: Mapping[str, str] | None) -> str | None:
    """The experiment a claim is measured on: named, or its group's validation choice."""
    m = claim["measured"]
    if "experiment" in m:
        return str(m["experiment"])
    if chosen is not None and "group" in m:
        return chosen.get(m["group"])
    return None


def comparison_rows(claims: dict, res: Results) -> list[dict]:
    """One dict per comparison of ``claims.yaml``: the guide's difference (or ratio) of two of its
    numbers beside the measured one; a difference is the paired bootstrap's (reference minus
    other, with its 95% interval and verdict), so one side must be the reference."""
    by_id = {c["id"]: c for c in claims["claims"]}
    out = []
    for comp in claims.get("comparisons", []):
        of, over = by_id[comp["of"]], by_id[comp["over"]]
        metric = of["measured"]["metric"]
        split = of["measured"].get("split", "test")
        if over["measured"]["metric"] != metric:
            raise ValueError(f"claims comparison {comp['id']}: its claims measure different things")
        exp_of, exp_over = _claimed_run(of, res.chosen), _claimed_run(over, res.chosen)
        row: dict[str, Any] = {
            "id": comp["id"], "quantity": comp["quantity"], "kind": comp["kind"],
            "metric": metric, "split": split, "of": exp_of, "over": exp_over,
            "measured": math.nan, "low": math.nan, "high": math.nan, "verdict": None,
            "mdd": math.nan, "status": "measured",
        }  # fmt: skip
        ran = all(e is not None and e in res.experiments.index and res.ran(e)
                  for e in (exp_of, exp_over))  # fmt: skip
        if comp["kind"] == "difference":
            row["claimed"] = float(of["claimed"]) - float(over["claimed"])
            sign = 1.0 if exp_of == res.reference else -1.0
            other = exp_over if exp_of == res.reference else exp_of
            pair = res.pair(other, metric) if ran and res.reference in (exp_of, exp_over) else None
            if not ran:
                row["status"] = "not run"
            elif pair is None:
                row["status"] = "no paired comparison"
            else:
                lo, hi = sign * float(pair["low"]), sign * float(pair["high"])
                row.update(measured=sign * float(pair["diff"]), low=min(lo, hi),
                           high=max(lo, hi), verdict=pair["verdict"],
                           mdd=float(pair.get("mdd", math.nan)))  # fmt: skip
        else:
            row["claimed"] = float(of["claimed"]) / float(over["claimed"])
            if not ran:
                row["status"] = "not run"
            elif not (res.has(exp_of, metric, split) and res.has(exp_over, metric, split)):
                row["status"] = "not measured"
            else:
                ratio = res.mean(exp_of, metric, split) / res.mean(exp_over, metric, split)
                row["measured"] = ratio
        out.append(row)
    return out


def claimed_differences(
    claims: dict, reference: str, chosen: Mapping[str, str] | None = None
) -> dict[str, float]:
    """``{experiment: claimed difference reference minus it}`` of the guide's difference
    comparisons that involve the reference (marked on the forest plot); a claim on a group
    (the manual grid) is placed on the group's choice when ``chosen`` is given."""
    by_id = {c["id"]: c for c in claims["claims"]}
    out = {}
    for comp in claims.get("comparisons", []):
        if comp["kind"] != "difference":
            continue
        of, over = by_id[comp["of"]], by_id[comp["over"]]
        exp_of, exp_over = _claimed_run(of, chosen), _claimed_run(over, chosen)
        value = float(of["claimed"]) - float(over["claimed"])
        if exp_of == reference and exp_over is not None:
            out[exp_over] = value
        elif exp_over == reference and exp_of is not None:
            out[exp_of] = -value
    return out


def _decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def claims_rows(claims: dict, res: Results) -> list[dict]:
    """One dict per claim: the claimed value, the measured one (or why none), the sources."""
    out = []
    for c in claims["claims"]:
        m = c["measured"]
        exp = _claimed_run(c, res.chosen)
        scale, suffix = UNITS[c.get("unit", "value")]
        measured, status = math.nan, "measured"
        if exp is None or exp not in res.experiments.index or not res.ran(exp):
            status = "not run"
        elif not res.has(exp, m["metric"], m.get("split", "test")):
            status = "not measured"
        else:
            measured = res.mean(exp, m["metric"], m.get("split", "test")) * scale
        out.append(
            {
                "id": c["id"],
                "quantity": c["quantity"],
                "claimed": float(c["claimed"]),
                "digits": max(_decimals(c["claimed"]), 1),
                "suffix": suffix,
                "measured": measured,
                "status": status,
                "experiment": exp,
                "split": m.get("split", "test"),
                "metric": m["metric"],
                "where": c["where"],
                "note": c.get("note"),
                "compare": c.get("compare", "value"),
                "n_seeds": res.n_seeds(exp, m["metric"], m.get("split", "test")) if exp else 0,
            }
        )
    return out


def selection_margins(selection: dict) -> list[tuple[float, int]]:
    """Per validation decision of a selection JSON (one, or one per fold under cv): the chosen
    score's lead over the runner-up and how many other candidates tied with it."""
    decisions = selection.get("per_fold") or [selection]
    out = []
    for decision in decisions:
        scores = sorted((float(c["score"]) for c in decision["candidates"]), reverse=True)
        if len(scores) < 2:
            continue
        out.append((scores[0] - scores[1], sum(s == scores[0] for s in scores[1:])))
    return out
