"""Display names of experiments, from the experiments table alone (no results needed).

A figure that reads only run files (training curves, diagnostics) names its configurations
without the tidy table, so that its DAG does not pull in every run of the study.
"""

from __future__ import annotations

import math

import pandas as pd

from echomtl.methods import METHOD_LABELS, MODEL_VARIANTS
from echomtl.report.latex import Tex, latex_escape
from echomtl.study import FRONT_DETECTION, GRADNORM_ALPHA

__all__ = ["MODEL_LABELS", "POINT_WORDS", "experiment_label", "plain_text"]

#: Display names of the models that are not the plain multi-task one (controls, single tasks).
MODEL_LABELS = {name: v.label for name, v in MODEL_VARIANTS.items() if name != "multitask"}


#: Display names of the per-fold composites of the validation choices among groups
#: (``Study.choices``; under cross-validation each fold makes its own choice).
CHOICE_LABELS = {
    FRONT_DETECTION: Tex("Detection-optimal fixed weight (chosen per fold)"),
    GRADNORM_ALPHA: Tex(r"GradNorm ($\alpha$ chosen per fold)"),
}

#: The snapshot points of a shared-trunk run (``training.trainer.SNAPSHOT_POINTS``) in words.
POINT_WORDS = {"warmup": "end of warm-up", "middle": "middle of training", "end": "end of training"}

#: How a label names a run's start when the study holds both (experiments column ``init``).
START_WORDS = {"scratch": "from scratch", "pretrained": "pretrained"}


def _minority_start(table: pd.DataFrame) -> str | None:
    """The start of the fewer rows when a study holds both (those rows' labels say it)."""
    if "init" not in table or table["init"].nunique() < 2:
        return None
    counts = table["init"].value_counts()
    return str(counts.index[-1]) if counts.iloc[-1] < counts.iloc[0] else "scratch"


def _num(x: float) -> str:
    return f"{x:g}"


def experiment_label(table: pd.DataFrame, experiment: str, with_group_value: bool = True) -> Tex:
    """LaTeX display name of a row of the (loaded) experiments table."""
    if experiment not in table.index:
        raise KeyError(f"experiment {experiment!r} is not in the experiments table")
    row = table.loc[experiment]
    model, method = row["model"], row["method"]
    text = MODEL_LABELS.get(model) or latex_escape(METHOD_LABELS.get(method, method))
    group_rows = table[table["group"] == row["group"]]
    if model == "multitask" and method == "fixed" and len(group_rows) > 1:
        text = "Manual weights"
    if bool(row.get("per_fold_selection", False)):
        if row["group"] in CHOICE_LABELS:  # a choice among groups (Study.choices)
            return Tex(CHOICE_LABELS[row["group"]])
        return Tex(f"{text} (chosen per fold)")
    extras = []
    if method == "gradnorm" and not math.isnan(row["alpha"]):
        extras.append(rf"$\alpha$\,=\,{_num(row['alpha'])}")
    if with_group_value and len(group_rows) > 1:
        if group_rows["w_cls"].nunique() > 1 and method != "gradnorm":
            extras.append(rf"$w_\mathrm{{cls}}$\,=\,{_num(row['w_cls'])}")
        if group_rows["w_det"].nunique() > 1:
            extras.append(rf"$w_\mathrm{{det}}$\,=\,{_num(row['w_det'])}")
    if row["augment"]:
        extras.append("augmentation")
    if row["split_variant"]:
        extras.append(f"{latex_escape(str(row['split']))} split")
    start = _minority_start(table)
    if start is not None and row.get("init") == start:
        extras.append(START_WORDS[start])
    if extras:
        text = f"{text} ({', '.join(extras)})"
    return Tex(text)


def plain_text(label: str) -> str:
    """A LaTeX label for matplotlib: unicode alpha, mathtext for the task weights."""
    return str(label).replace("$\\alpha$", "α").replace("\\,", "")
