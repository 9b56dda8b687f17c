"""The cost of sharing and the fraction recovered (echomtl.evaluation.sharing): each rule in both
directions, on resample values whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echomtl.evaluation.sharing import (
    COST_READINGS,
    DELTA_M_READINGS,
    RECOVERY_READINGS,
    cost_reading,
    delta_m,
    difference,
    recovered_fraction,
    recovery_reading,
    sharing_summary,
)

RNG = np.random.default_rng(0)


def _run(point: float, spread: float = 0.01, n: int = 999) -> tuple[float, np.ndarray]:
    """A run's point value and resamples centred on it (independent noise)."""
    return point, point + spread * RNG.standard_normal(n)


def test_difference_words_the_interval():
    a, b = _run(0.6), _run(0.4)
    out = difference(a[0], a[1], b[0], b[1])
    assert out["diff"] == pytest.approx(0.2) and out["low"] > 0 and out["verdict"] == "higher"
    assert out["p"] < 0.01
    same = difference(0.5, np.full(10, 0.5), 0.5, np.full(10, 0.5))
    assert same["verdict"] == "not distinguishable at 95%"
    assert difference(math.nan, np.full(3, math.nan), 0.5, np.full(3, 0.5))["verdict"] is None


def test_cost_reading_both_directions():
    iso, shared = _run(0.6), _run(0.4)
    costs = difference(iso[0], iso[1], shared[0], shared[1])
    helps = difference(shared[0], shared[1], iso[0], iso[1])
    assert cost_reading(costs) == COST_READINGS["higher"] == "costs"
    assert cost_reading(helps) == "helps"
    wide_iso, wide_shared = _run(0.5, 0.2), _run(0.49, 0.2)
    none = difference(wide_iso[0], wide_iso[1], wide_shared[0], wide_shared[1])
    assert cost_reading(none) == "no measurable cost"
    assert cost_reading({"verdict": None}) is None


def test_recovered_fraction_known_answers():
    iso, shared = _run(0.6), _run(0.4)
    half, full, none, worse = _run(0.5), _run(0.7), _run(0.4, 0.05), _run(0.3)
    read = {}
    for name, method in (("half", half), ("full", full), ("none", none), ("worse", worse)):
        out = recovered_fraction(method, shared, iso, "costs")
        read[name] = out["reading"]
        if name == "half":
            assert out["point"] == pytest.approx(0.5)
            assert 0 < out["low"] < 0.5 < out["high"] < 1
    assert read == {
        "half": "recovers a measurable part",
        "full": "recovers all of it",
        "none": "recovers nothing measurable",
        "worse": "adds to it",
    }
    assert set(read.values()) == set(RECOVERY_READINGS)


def test_no_fraction_of_a_cost_that_is_not_measurable():
    iso, shared, method = _run(0.5), _run(0.5), _run(0.55)
    for reading in ("no measurable cost", "helps", None):
        assert recovered_fraction(method, shared, iso, reading) is None


@pytest.mark.parametrize(
    ("lo", "hi", "reading"),
    [(1.0, 1.4, 0), (0.2, 1.3, 1), (-0.1, 0.8, 2), (-0.9, -0.2, 3)],
)
def test_recovery_reading_boundaries(lo, hi, reading):
    assert recovery_reading(lo, hi) == RECOVERY_READINGS[reading]


def test_sharing_summary_reads_each_task_against_its_own_single_task_reference():
    runs = {
        "det_only": _run(0.6),
        "view_only": _run(0.8),
        "fixed": _run(0.4),
        "gradnorm": _run(0.5),
    }
    values = {
        name: ({"map50": p, "view_accuracy": p + 0.1}, {"map50": v, "view_accuracy": v + 0.1})
        for name, (p, v) in runs.items()
    }
    out = sharing_summary(
        values, {"map50": "det_only", "view_accuracy": "view_only"}, "fixed", ["gradnorm"]
    )
    assert out["map50"]["isolated"] == "det_only"
    assert out["map50"]["cost"]["reading"] == "costs"
    assert out["map50"]["methods"]["gradnorm"]["fraction"]["point"] == pytest.approx(0.5)
    assert out["view_accuracy"]["isolated"] == "view_only"
    assert out["view_accuracy"]["cost"]["diff"] == pytest.approx(0.4)
    assert out["view_accuracy"]["methods"]["gradnorm"]["fraction"]["point"] == pytest.approx(0.25)


def test_each_comparison_uses_the_seeds_its_own_runs_share(tmp_path):
    """The cost of sharing reads the decisive runs' three seeds, a one-seed method's gain only
    seed 0 (scored again on that seed, on the same resampled patients)."""
    from echomtl.evaluation.sharing import CommonValues
    from echomtl.evaluation.statistics import bootstrap_experiment

    from .test_statistics import _images, _write_run

    runs = {"det_only": (0, 1, 2), "fixed": (0, 1, 2), "gradnorm": (0,)}
    predictions, values = {}, {}
    for name, seeds in runs.items():
        predictions[name] = [
            _write_run(tmp_path, name, s, _images(12, 6 + s, view_head=name != "det_only"))
            for s in seeds
        ]
        values[name] = tmp_path / f"{name}.values.npz"
        bootstrap_experiment(name, predictions[name], None, n_resamples=30, values_out=values[name])
    common = CommonValues(predictions, values, ("map50",), n_resamples=30, seed=0)
    assert common.seeds(["det_only", "fixed"]) == [0, 1, 2]
    assert common.seeds(["det_only", "fixed", "gradnorm"]) == [0]
    pair = common(["det_only", "fixed"])  # the stored values serve: same seeds, same settings
    assert pair["fixed"][1]["map50"] is common.stored["fixed"]["values"]["map50"]
    trio = common(["det_only", "fixed", "gradnorm"])  # scored again on seed 0
    assert len(trio["fixed"][1]["map50"]) == 30
    assert trio["fixed"][1]["map50"] is not common.stored["fixed"]["values"]["map50"]


@pytest.mark.parametrize(
    ("det", "view", "expected", "reading"),
    [
        # +10% on detection, -5% on views: +2.5% (LibMTL's mean of the relative changes)
        (0.55, 0.76, 2.5, "higher"),
        (0.45, 0.76, -7.5, "lower"),  # -10% and -5%
        (0.55, 0.72, 0.0, "not distinguishable at 95%"),  # +10% and -10% cancel
    ],
)
def test_delta_m_known_answers_both_ways(det, view, expected, reading):
    single = {"map50": _run(0.5, 0.002), "view_accuracy": _run(0.8, 0.002)}
    own = {"map50": _run(det, 0.002), "view_accuracy": _run(view, 0.002)}
    out = delta_m(own, single)
    assert out["point"] == pytest.approx(expected)
    assert out["verdict"] == reading and out["reading"] == DELTA_M_READINGS[reading]
    assert out["low"] <= out["point"] <= out["high"]


def test_delta_m_of_an_undefined_baseline_is_not_worded():
    zero = {"map50": (0.0, np.zeros(50)), "view_accuracy": _run(0.8, 0.002, 50)}
    out = delta_m({"map50": _run(0.5, 0.002, 50), "view_accuracy": _run(0.8, 0.002, 50)}, zero)
    assert out["point"] is None and out["reading"] is None
