"""Rules that turn measured numbers into the paper's words.

Each rule is a small pure function, tested in every direction it can decide, so that other
numbers give other words: whether any detector learned (:func:`detection_learned`), view accuracy
against always predicting the most frequent view (:func:`versus_majority`), whether a run failed
(:func:`failure_reasons`) and so cannot stand for the axis it was run for, whether a difference
runs against what was expected of it (:func:`against_expectation`), which way the gradient
diagnostics point (:func:`interference_reading`), and whether GradNorm's detection step differs
from fixed weights' (:func:`detection_step_reading`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DETECTION_EXAMPLES_RULE",
    "SMALL_CLASS_BOXES",
    "DETECTION_FLOOR",
    "DOMINANCE_SHARE",
    "detection_learned",
    "versus_majority",
    "failure_reasons",
    "EXPECTED_DIRECTIONS",
    "against_expectation",
    "negative_share_interval",
    "InterferenceReading",
    "interference_reading",
    "STEP_TOLERANCE",
    "detection_step_reading",
]

#: Detection floor: when the upper 95% bound of every main configuration's test mAP@0.5 lies
#: below it, the build's detectors did not learn to localise jets, and the text says that the
#: detection comparisons cannot answer the question (whatever their verdicts).
DETECTION_FLOOR = 0.10

#: A task "dominates" the shared update when its median share of the applied update reaches this
#: (the other task then moves the trunk by a tenth or less, whether or not the two oppose).
DOMINANCE_SHARE = 0.90


#: GradNorm's mean detection weight within this relative distance of fixed weights' w_det is the
#: same detection step size (the two runs share the optimiser, so w_det scales the step).
STEP_TOLERANCE = 0.05


def detection_step_reading(mean_w_det: float, control_w_det: float,
                           tolerance: float = STEP_TOLERANCE) -> str:  # fmt: skip
    """GradNorm's detection step against the fixed-weight control's: "the same", "smaller" or
    "larger". The model's gradient is sum_i w_i L_i under one optimiser, so a lower mean w_det
    is a smaller detection step, a confound of any detection difference between the two."""
    if not control_w_det > 0 or math.isnan(mean_w_det):
        raise ValueError(f"detection_step_reading: weights {mean_w_det}, {control_w_det}")
    change = mean_w_det / control_w_det - 1.0
    if abs(change) <= tolerance:
        return "the same"
    return "smaller" if change < 0 else "larger"


#: A class with fewer test boxes than this has a noisy AP: fig_per_class_ap hatches its bars.
SMALL_CLASS_BOXES = 20

#: Which test images fig_detection_examples shows (for the caption); it is what _pick_examples does.
DETECTION_EXAMPLES_RULE = (
    "The images are chosen without looking at the predictions: for each regurgitation class in "
    "turn (in the order of the class list), the first test image in file-name order that has a "
    "ground-truth box of that class and is not already shown, until the panels are filled; any "
    "panel left over shows the next test image in file-name order."
)


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


def failure_reasons(map50_high: float, view_accuracy: float, majority: float) -> list[str]:
    """Why a run failed, empty when it did not: ``detection`` when the upper 95% bound of its
    mAP@0.5 lies below :data:`DETECTION_FLOOR` (its detector did not learn), ``view`` when its
    view accuracy does not exceed the share of the most frequent view (it does no better than a
    constant answer). NaN (a task the model lacks, or no majority share) decides nothing.

    A failed run is named as failed and is never read as evidence about the axis it stood for
    (augmentation, split, start): the text says that axis is not readable in this build.
    """
    reasons = []
    if not math.isnan(map50_high) and map50_high < DETECTION_FLOOR:
        reasons.append("detection")
    if not (math.isnan(view_accuracy) or math.isnan(majority)) and view_accuracy <= majority:
        reasons.append("view")
    return reasons


#: What each axis of the study is expected to show, as the sign of ``variant - study run``: a
#: leaky split (frames of training videos among the test images) should score higher than the
#: patient-grouped one; a run from random weights lower than the pretrained one.
EXPECTED_DIRECTIONS = {"split": +1, "init_scratch": -1, "init_pretrained": +1}


def against_expectation(difference: float, axis: str) -> bool:
    """Whether ``difference`` (variant - study run) has the sign opposite to what
    :data:`EXPECTED_DIRECTIONS` states for ``axis``: the text then flags it rather than reading
    it as a finding. 0 or NaN is not against."""
    if math.isnan(difference) or difference == 0:
        return False
    return (difference > 0) != (EXPECTED_DIRECTIONS[axis] > 0)


def negative_share_interval(frac_negative: float, n_steps: int) -> tuple[float, float]:
    """Wilson 95% interval of the share of steps with a negative cosine, treating the logged steps
    as independent (consecutive steps are correlated, so the interval is if anything too narrow:
    a reading of "no direction" is conservative, one of "conflict" must be read with that in mind).
    """
    from scipy.stats import binomtest

    if n_steps <= 0 or math.isnan(frac_negative):
        return (math.nan, math.nan)
    k = int(round(frac_negative * n_steps))
    ci = binomtest(k, n_steps).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


@dataclass(frozen=True)
class InterferenceReading:
    """Which way one configuration's gradient diagnostics point, and why."""

    #: ``conflict`` (the cosine is negative at more than half of the steps, beyond chance),
    #: ``agreement`` (negative at fewer than half, beyond chance) or ``undecided``
    direction: str
    #: ``detection``/``classification`` when that task's median share of the update reaches
    #: :data:`DOMINANCE_SHARE`, else None
    dominant: str | None
    negative_low: float
    negative_high: float


def interference_reading(
    frac_negative: float, n_steps: int, share_det: float
) -> InterferenceReading:
    """The rule the paper states: the two task gradients conflict when the share of steps with a
    negative cosine is above one half with its 95% interval excluding one half (what a cosine
    that points either way by chance gives), agree when it is below with the interval excluding
    one half, and neither can be said otherwise; separately, a task whose median share of the
    applied update reaches :data:`DOMINANCE_SHARE` dominates the shared trunk."""
    low, high = negative_share_interval(frac_negative, n_steps)
    if not math.isnan(low) and low > 0.5:
        direction = "conflict"
    elif not math.isnan(high) and high < 0.5:
        direction = "agreement"
    else:
        direction = "undecided"
    dominant = None
    if not math.isnan(share_det):
        if share_det >= DOMINANCE_SHARE:
            dominant = "detection"
        elif share_det <= 1 - DOMINANCE_SHARE:
            dominant = "classification"
    return InterferenceReading(direction, dominant, low, high)
