"""View metrics on a hand-checked case with missing views."""

import math

import pytest

from echomtl.evaluation.classification_metrics import view_metrics

VIEWS = ["A4C", "PSAX", "PLAX"]


def test_view_metrics_hand_checked():
    true = [0, 0, 1, 1, -1, 0, -1]
    pred = [0, 1, 1, 1, 2, 0, 0]
    m = view_metrics(true, pred, VIEWS)
    assert m["n_evaluated"] == 5 and m["n_missing"] == 2
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    # A4C: tp 2, fp 0, fn 1 -> 0.8; PSAX: tp 2, fp 1, fn 0 -> 0.8; PLAX absent from both: left out
    assert m["macro_f1"] == pytest.approx(0.8)
    assert m["labels"] == VIEWS


def test_predicted_only_class_counts_in_macro_f1():
    m = view_metrics([0, 0], [0, 2], VIEWS)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.0) / 2)  # A4C 2/3, PLAX 0


def test_all_missing_is_nan():
    m = view_metrics([-1, -1], [0, 1], VIEWS)
    assert m["n_evaluated"] == 0 and m["n_missing"] == 2
    assert math.isnan(m["accuracy"]) and math.isnan(m["macro_f1"])


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        view_metrics([0, 1], [0], VIEWS)
