"""Pooled out-of-fold evaluation and per-fold selection of the cross-validated protocol."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from echomtl.atomic import run_id_from_path
from echomtl.evaluation.pooling import check_folds_cover, fold_summary, pool_fold_predictions
from echomtl.evaluation.selection import select_group_per_fold


def _doc(names: list[str]) -> dict:
    images = [
        {"name": n, "width": 10, "height": 10, "gt": [], "pred": [], "view_true": 0,
         "view_pred": 0}
        for n in names
    ]  # fmt: skip
    return {"class_names": ["AR"], "view_names": ["A4C", "PSAX"], "images": images}


def test_pooling_keeps_every_image_once_tagged_with_its_fold():
    pooled = pool_fold_predictions({0: _doc(["a", "b"]), 1: _doc(["c"])}, {0: {"a", "b"}, 1: {"c"}})
    assert [(im["name"], im["fold"]) for im in pooled["images"]] == [("a", 0), ("b", 0), ("c", 1)]


def test_pooling_refuses_an_image_of_two_folds_or_outside_the_fold():
    with pytest.raises(ValueError, match="'b' is a test image of folds 0 and 1"):
        pool_fold_predictions({0: _doc(["a", "b"]), 1: _doc(["b"])}, {0: {"a", "b"}, 1: {"b"}})
    with pytest.raises(ValueError, match="fold 1's predictions are not exactly its test images"):
        pool_fold_predictions({0: _doc(["a"]), 1: _doc(["a"])}, {0: {"a"}, 1: {"c"}})
    with pytest.raises(ValueError, match="predictions for folds"):
        pool_fold_predictions({0: _doc(["a"])}, {0: {"a"}, 1: {"c"}})


def test_folds_must_partition_the_cohort():
    check_folds_cover({0: {"a"}, 1: {"b"}}, ["a", "b"])
    with pytest.raises(ValueError, match="must partition it"):
        check_folds_cover({0: {"a"}, 1: {"a"}}, ["a", "b"])


def test_fold_summary_keeps_the_reported_values():
    metrics = {
        "n_images": 4,
        "detection": {"map50": 0.5, "map50_95": 0.2, "precision": 0.6, "recall": 0.4, "f1": 0.48},
        "classification": {"accuracy": 0.75, "macro_f1": 0.7},
    }
    out = fold_summary(2, "fixed", metrics, n_patients=3)
    assert out["fold"] == 2 and out["map50"] == 0.5 and out["view_accuracy"] == 0.75
    assert out["n_patients"] == 3


def test_fold_run_files_map_to_their_experiment_and_seed():
    assert run_id_from_path("results/runs/fixed/seed2/fold3/steps.csv") == ("fixed", 2)
    assert run_id_from_path("results/runs/fixed/seed2/steps.csv") == ("fixed", 2)
    with pytest.raises(ValueError):
        run_id_from_path("results/runs/fixed/seed2/other/steps.csv")


def _table() -> pd.DataFrame:
    rows = [
        ("manual_wcls0.1", 0.1, False),
        ("manual_wcls1.0", 1.0, False),
        ("manual_per_fold", math.nan, True),
    ]
    return pd.DataFrame(
        [
            {"experiment": e, "group": "manual", "method": "fixed", "model": "multitask",
             "w_det": 1.0, "w_cls": w, "alpha": math.nan, "augment": False,
             "per_fold_selection": composite}
            for e, w, composite in rows
        ]
    )  # fmt: skip


def _valid(values: dict[str, tuple[float, float]]) -> pd.DataFrame:
    rows = []
    for exp, (m, a) in values.items():
        rows += [(exp, "manual", 0, "valid", "map50", m), (exp, "manual", 0, "valid",
                 "view_accuracy", a)]  # fmt: skip
    return pd.DataFrame(rows, columns=["experiment", "group", "seed", "split", "metric", "value"])


def test_selection_happens_per_fold_and_the_composite_is_chosen():
    tidies = {
        0: _valid({"manual_wcls0.1": (0.6, 0.8), "manual_wcls1.0": (0.5, 0.8)}),
        1: _valid({"manual_wcls0.1": (0.4, 0.7), "manual_wcls1.0": (0.5, 0.9)}),
    }
    sel = select_group_per_fold(tidies, _table(), "manual")
    assert [f["chosen"] for f in sel["per_fold"]] == ["manual_wcls0.1", "manual_wcls1.0"]
    assert sel["chosen"] == "manual_per_fold" and sel["protocol"] == "cv"
    by_name = {c["experiment"]: c for c in sel["candidates"]}
    assert by_name["manual_wcls0.1"]["n_folds_chosen"] == 1
    assert by_name["manual_wcls1.0"]["map50"] == pytest.approx(0.5)
    assert "manual_per_fold" not in by_name  # the composite is never a candidate


def test_per_fold_selection_needs_its_composite_row():
    table = _table().iloc[:2]
    with pytest.raises(ValueError, match="one per-fold selection row"):
        select_group_per_fold({0: _valid({"manual_wcls0.1": (0.6, 0.8)})}, table, "manual")
