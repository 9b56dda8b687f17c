"""The fixed-weight front: which configurations does some constant weighting already match?

Xin et al. (2022) judge a multi-task optimisation method against the front that fixed weights
trace as the weight moves: a method that a fixed-weight run matches or beats on both metrics
brings nothing a weight sweep could not. Here the two metrics are test mAP@0.5 and view accuracy
(point estimates), higher is better for both.
"""

from __future__ import annotations

from collections.abc import Mapping

Point = tuple[float, float]  # (mAP@0.5, view accuracy)


def dominated_by(point: Point, front: Mapping[str, Point]) -> list[str]:
    """The front runs at least as good as ``point`` on both metrics and better on one."""
    x, y = point
    return [name for name, (fx, fy) in front.items() if fx >= x and fy >= y and (fx > x or fy > y)]


def non_dominated(points: Mapping[str, Point]) -> list[str]:
    """The Pareto front of ``points``: those that no other point dominates (order kept).

    A fixed-weight run that another fixed weight beats on both metrics is not on the front; the
    figure draws the front through these points only, apart from the runs in weight order.
    """
    return [
        name for name, p in points.items()
        if not dominated_by(p, {k: v for k, v in points.items() if k != name})
    ]  # fmt: skip


def split_by_front(points: Mapping[str, Point], front: Mapping[str, Point]) -> dict[str, list[str]]:
    """``{"dominated": [...], "beyond": [...]}``: configurations some fixed-weight run dominates,
    and those none does (in the order given)."""
    out: dict[str, list[str]] = {"dominated": [], "beyond": []}
    for name, point in points.items():
        out["dominated" if dominated_by(point, front) else "beyond"].append(name)
    return out
