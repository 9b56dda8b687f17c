"""Rules that turn measured numbers into the paper's words.

Each rule is a small pure function, tested in every direction it can decide, so that other
numbers give other words: whether any detector learned (:func:`detection_learned`), view accuracy
against always predicting the most frequent view (:func:`versus_majority`), and which way the
gradient diagnostics point (:func:`interference_reading`).
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
    "negative_share_interval",
    "InterferenceReading",
    "interference_reading",
]

#: Detection floor: when the upper 95% bound of every main configuration's test mAP@0.5 lies
#: below it, the build's detectors did not learn to localise jets, and the text says that the
#: detection comparisons cannot answer the question (whatever their verdicts).
DETECTION_FLOOR = 0.10

#: A task "dominates" the shared update when its median share of the applied update reaches this
#: (the other task then moves the trunk by a tenth or less, whether or not the two oppose).
DOMINANCE_SHARE = 0.90


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
