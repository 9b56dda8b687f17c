"""The fixed-weight front rule, in both directions."""

from echomtl.report.front import dominated_by, non_dominated, split_by_front

FRONT = {"w0.01": (0.70, 0.60), "w0.1": (0.72, 0.89), "w1": (0.55, 0.96)}


def test_a_point_beaten_on_both_metrics_is_dominated():
    assert dominated_by((0.68, 0.75), FRONT) == ["w0.1"]


def test_a_point_better_on_one_metric_than_every_fixed_run_is_beyond():
    assert dominated_by((0.74, 0.70), FRONT) == []  # better mAP than any fixed run
    assert dominated_by((0.50, 0.98), FRONT) == []  # better view accuracy than any
    assert dominated_by((0.72, 0.89), FRONT) == []  # equal to a front point: not dominated


def test_split_keeps_the_order_and_covers_every_point():
    points = {"gradnorm": (0.71, 0.89), "pcgrad": (0.67, 0.76), "better": (0.80, 0.99)}
    assert split_by_front(points, FRONT) == {
        "dominated": ["gradnorm", "pcgrad"],
        "beyond": ["better"],
    }


def test_the_pareto_front_is_the_non_dominated_set():
    points = {"a": (0.5, 0.5), "b": (0.6, 0.4), "c": (0.4, 0.4), "d": (0.5, 0.5), "e": (0.2, 0.9)}
    # c is beaten by a on both metrics; a and d tie (neither dominates the other)
    assert non_dominated(points) == ["a", "b", "d", "e"]
    assert non_dominated({"only": (0.1, 0.1)}) == ["only"]
    chain = {"w0.1": (0.3, 0.3), "w1": (0.4, 0.5), "w10": (0.2, 0.6)}
    assert non_dominated(chain) == ["w1", "w10"]  # w0.1 is dominated by w1: off the front
