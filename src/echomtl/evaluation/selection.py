"""The validation choice of a grid group (several rows of one ``group``): an evaluation step.

The group's row with the best validation score is its configuration in the paper; under
cross-validation the choice is made on each fold's validation part and the group's result is
the composite row (each fold's test images predicted by that fold's choice). Test values are
never read. The choice is written as ``selection/<group>.json`` beside the runs; the report only
reads it (:func:`read_selections`). Choices among rows of different groups (``Study.choices``)
are made the same way, per fold under cross-validation, into ``selection/choices/<name>.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from echomtl.atomic import PathLike, json_clean, read_json, write_json
from echomtl.methods import model_variant
from echomtl.study import FRONT_DETECTION, GRADNORM_ALPHA, GRID_SETTINGS, SETTINGS, Study, as_table

__all__ = [
    "SCORES",
    "score_definition",
    "validation_values",
    "validation_score",
    "select_group",
    "select_group_per_fold",
    "choose_per_fold",
    "CHOICE_SCORES",
    "select_choice",
    "read_selections",
]

#: Selection scores (config ``report.selection_metric``); with several seeds each validation
#: value is the mean over seeds (:data:`SEED_CLAUSE`).
SCORES = {
    "mean_map50_accuracy": (
        "mean of validation mAP@0.5 and validation view accuracy (mAP@0.5 alone for models "
        "without a classification head)"
    ),
    "map50": "validation mAP@0.5",
    "accuracy": "validation view accuracy",
}
SEED_CLAUSE = ", each value averaged over seeds"
#: The settings a selection file lists per candidate (those that can vary within a group).
CANDIDATE_SETTINGS = tuple(s for s in SETTINGS if s not in ("scale", "split", "init"))
assert set(GRID_SETTINGS) <= set(CANDIDATE_SETTINGS)


def score_definition(score: str, n_seeds: int) -> str:
    """The selection score in words; the seed clause only when there are several seeds."""
    return SCORES[score] + (SEED_CLAUSE if n_seeds > 1 else "")


def validation_values(metric_files: Iterable[PathLike]) -> dict[int | None, pd.DataFrame]:
    """The validation mAP@0.5 and view accuracy of ``metrics_valid.json`` files, per outer fold
    (``None`` for holdout runs), as ``experiment, seed, split, metric, value`` rows."""
    rows: dict[int | None, list[tuple]] = {}
    for path in metric_files:
        data = read_json(path)
        try:
            exp, seed, split = str(data["experiment"]), int(data["seed"]), str(data["split"])
            detection = data["detection"]
            values = [("map50", None if detection is None else detection["map50"])]
        except KeyError as exc:
            raise ValueError(f"{path}: metrics JSON lacks {exc}") from None
        if data.get("classification") is not None and "accuracy" in data["classification"]:
            values.append(("view_accuracy", data["classification"]["accuracy"]))
        rows.setdefault(data.get("fold"), []).extend(
            (exp, seed, split, m, math.nan if v is None else float(v)) for m, v in values
        )
    columns = ["experiment", "seed", "split", "metric", "value"]
    return {fold: pd.DataFrame(r, columns=columns) for fold, r in rows.items()}


def _seed_mean(tidy: pd.DataFrame, exp: str, metric: str) -> tuple[float, int]:
    sel = tidy[(tidy.experiment == exp) & (tidy.split == "valid") & (tidy.metric == metric)]
    values = sel["value"].astype(float)
    values = values[np.isfinite(values)]
    return (float(values.mean()), int(len(values))) if len(values) else (math.nan, 0)


def validation_score(
    tidy: pd.DataFrame, experiment: str, has_classifier: bool, score: str = "mean_map50_accuracy"
) -> dict[str, float]:
    """Validation score of one experiment (see :data:`SCORES`), with its ingredients.

    Returns ``{"map50", "view_accuracy", "score", "n_seeds"}`` (NaN where not measured).
    """
    if score not in SCORES:
        raise ValueError(f"unknown selection score {score!r}; expected one of {list(SCORES)}")
    m, n_m = _seed_mean(tidy, experiment, "map50")
    a, _ = _seed_mean(tidy, experiment, "view_accuracy")
    if n_m == 0:
        raise ValueError(f"no validation mAP@0.5 for {experiment!r}: was it evaluated on valid?")
    if score == "map50":
        value = m
    elif score == "accuracy":
        if not has_classifier:
            raise ValueError(f"{experiment!r} has no classifier: cannot select it on view accuracy")
        value = a
    else:
        value = (m + a) / 2.0 if has_classifier else m
    if has_classifier and score != "map50" and math.isnan(a):
        raise ValueError(f"no validation view accuracy for {experiment!r}")
    return {"map50": m, "view_accuracy": a, "score": value, "n_seeds": n_m}


def select_group(
    tidy: pd.DataFrame,
    experiments: Study | pd.DataFrame | PathLike,
    group: str,
    out_json: PathLike | None = None,
    score: str = "mean_map50_accuracy",
) -> dict:
    """Choose the row of ``group`` with the best validation score (see :data:`SCORES`).

    Ties go to the row that comes first in the experiments table (deterministic). The result
    holds the score's name and definition, the grid (the settings that vary within the group),
    every candidate's validation values and the chosen experiment.
    """
    table = as_table(experiments)
    rows = table[(table["group"] == group) & ~table["per_fold_selection"]]
    if rows.empty:
        raise ValueError(f"group {group!r} is not in the experiments table")
    return choose(tidy, rows, group, out_json, score)


#: the score each choice of :attr:`Study.choices` is made on; None: the manual grid's
CHOICE_SCORES: dict[str, str | None] = {FRONT_DETECTION: "map50", GRADNORM_ALPHA: None}


def select_choice(
    tidy: pd.DataFrame | Mapping[int, pd.DataFrame],
    study: Study,
    name: str,
    out_json: PathLike | None = None,
    grid_score: str = "mean_map50_accuracy",
) -> dict:
    """A validation choice among rows of different groups (:attr:`Study.choices`): the
    detection-optimal fixed weight (best validation mAP@0.5 on the front: the best a weight
    sweep offers detection) or GradNorm's alpha (the manual grid's score, ``grid_score``: the
    same tuning the grid's weight gets). Test values are never read.

    ``tidy`` per outer fold (a mapping fold -> validation values) makes the choice on each fold,
    as a grid group's is under cv; the result's ``chosen`` is then the choice's composite row."""
    if name not in study.choices:
        raise ValueError(f"{name!r} is not a choice of this study (it has {list(study.choices)})")
    rows = study.table.loc[study.choices[name]]
    score = CHOICE_SCORES[name] or grid_score
    if isinstance(tidy, pd.DataFrame):
        return choose(tidy, rows, name, out_json, score)
    composite = [n for n in study.composite if study.row(n)["group"] == name]
    return choose_per_fold(tidy, rows, name, composite, out_json, score)


def choose(
    tidy: pd.DataFrame,
    rows: pd.DataFrame,
    group: str,
    out_json: PathLike | None = None,
    score: str = "mean_map50_accuracy",
) -> dict:
    """The row of ``rows`` with the best validation score; see :func:`select_group`.

    Every candidate is scored on the seeds they all ran: a candidate with more seeds (a decisive
    run beside one-seed alternatives) would otherwise be scored more precisely than the rest, and
    taking the maximum of unequally noisy scores favours the noisier ones."""
    varying = [c for c in CANDIDATE_SETTINGS if rows[c].astype(str).nunique() > 1]
    valid = tidy[(tidy["split"] == "valid") & tidy["experiment"].isin(rows.index)]
    ran = [set(valid.loc[valid["experiment"] == e, "seed"]) for e in rows.index]
    common = set.intersection(*ran) if ran and all(ran) else set()
    if common:
        tidy = tidy[tidy["seed"].isin(common)]
    candidates = []
    for exp, row in rows.iterrows():
        values = validation_score(tidy, str(exp), "cls" in model_variant(row["model"]).tasks, score)
        params = {c: json_clean(row[c]) for c in CANDIDATE_SETTINGS}
        candidates.append({"experiment": str(exp), **params, **values})
    best = None
    for cand in candidates:
        if math.isnan(cand["score"]):
            raise ValueError(f"validation score of {cand['experiment']!r} is NaN")
        if best is None or cand["score"] > best["score"]:
            best = cand
    assert best is not None
    result = {
        "group": group,
        "split": "valid",
        "score": {"name": score, "definition": score_definition(score, len(set(tidy["seed"])))},
        "seeds": sorted(int(x) for x in set(tidy["seed"])),
        "varying": varying,
        "candidates": candidates,
        "chosen": best["experiment"],
        "tie_rule": "first row of the experiments table among equal scores",
    }
    if out_json is not None:
        write_json(out_json, result)
    return result


def select_group_per_fold(
    fold_tidies: Mapping[int, pd.DataFrame],
    experiments: Study | pd.DataFrame | PathLike,
    group: str,
    out_json: PathLike | None = None,
    score: str = "mean_map50_accuracy",
) -> dict:
    """Cross-validated selection: :func:`select_group` on each fold's validation part.

    The group's pooled result is then the composite row of the table (``per_fold_selection``):
    fold ``f``'s test images predicted by the configuration fold ``f``'s validation chose.
    """
    table = as_table(experiments)
    rows = table[(table["group"] == group) & ~table["per_fold_selection"]]
    if rows.empty:
        raise ValueError(f"group {group!r} is not in the experiments table")
    composite = table[(table["group"] == group) & table["per_fold_selection"]]
    return choose_per_fold(fold_tidies, rows, group, list(composite.index), out_json, score)


def choose_per_fold(
    fold_tidies: Mapping[int, pd.DataFrame],
    rows: pd.DataFrame,
    group: str,
    composite: Sequence[str],
    out_json: PathLike | None = None,
    score: str = "mean_map50_accuracy",
) -> dict:
    """:func:`choose` on each fold's validation part; ``chosen`` is the composite row that pools
    the folds' choices. Each candidate also gets its validation values averaged over folds and
    the number of folds that chose it."""
    if len(composite) != 1:
        raise ValueError(
            f"{group!r}: expected one per-fold selection row in the experiments table, "
            f"found {len(composite)}"
        )
    per_fold = []
    sel: dict = {}
    for fold, tidy in sorted(fold_tidies.items()):
        sel = choose(tidy, rows, group, score=score)
        per_fold.append({"fold": fold, "chosen": sel["chosen"], "candidates": sel["candidates"]})
    if not per_fold:
        raise ValueError(f"{group!r}: no fold to select on")
    candidates = []
    for i, cand in enumerate(per_fold[0]["candidates"]):
        values = [f["candidates"][i] for f in per_fold]
        merged = dict(cand)
        for key in ("map50", "view_accuracy", "score"):
            merged[key] = float(np.mean([v[key] for v in values]))
        merged["n_folds_chosen"] = sum(f["chosen"] == cand["experiment"] for f in per_fold)
        candidates.append(merged)
    result = {
        **{k: v for k, v in sel.items() if k not in ("candidates", "chosen")},
        "protocol": "cv",
        "per_fold": per_fold,
        "candidates": candidates,
        "chosen": str(composite[0]),
    }
    if out_json is not None:
        write_json(out_json, result)
    return result


def select(
    metric_files: Iterable[PathLike], study: Study, group: str, out_json: PathLike, score: str
) -> dict:
    """The selection job: per fold when the files are fold runs, else on the holdout runs."""
    tidies = validation_values(metric_files)
    if list(tidies) == [None]:
        return select_group(tidies[None], study, group, out_json, score=score)
    if None in tidies:
        raise ValueError(f"selection of {group}: fold and holdout runs mixed")
    return select_group_per_fold(tidies, study, group, out_json, score=score)  # type: ignore[arg-type]


def read_selections(
    selection_files: Iterable[PathLike], experiments: Study | pd.DataFrame | PathLike
) -> tuple[dict[str, str], dict[str, dict]]:
    """``({group: chosen experiment}, {group: selection dict})`` for every group of the table.

    Single-row groups need no file (the row is the choice); a multi-row group without a
    selection file is an error (its test result must not be picked by hand).
    """
    table = as_table(experiments)
    selections: dict[str, dict] = {}
    for path in selection_files:
        sel = read_json(path)
        if sel.get("group") in selections:
            raise ValueError(f"{path}: a second selection for group {sel.get('group')!r}")
        if sel.get("chosen") not in table.index or table.at[sel["chosen"], "group"] != sel["group"]:
            raise ValueError(
                f"{path}: chosen {sel.get('chosen')!r} is not a row of {sel['group']!r}"
            )
        selections[sel["group"]] = sel
    chosen: dict[str, str] = {}
    for group in dict.fromkeys(table["group"]):
        rows = table[table["group"] == group]
        if group in selections:
            chosen[group] = selections[group]["chosen"]
        elif len(rows) == 1:
            chosen[group] = str(rows.index[0])
        else:
            raise ValueError(
                f"group {group!r} has {len(rows)} rows but no selection.json was given"
            )
    return chosen, selections
