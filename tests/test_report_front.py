"""The fixed-weight front rule, in both directions."""

from echomtl.report.front import dominated_by, split_by_front

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
