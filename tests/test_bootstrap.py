"""Bootstrap: determinism, interval sanity, paired differences."""

import pytest

from echomtl.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap

NAMES = ["AR", "MR"]


def make_images(n=12):
    images = []
    for i in range(n):
        c = i % 2
        gt = [[c, 10, 10, 50, 50]]
        if i % 3 == 0:
            pred = [[c, 0.3 + 0.05 * (i % 4), 60, 60, 90, 90]]  # a miss and a false positive
        else:
            pred = [[c, 0.5 + 0.03 * (i % 5), 12, 10, 50, 52]]
        view_true = -1 if i == 5 else i % 3
        images.append(
            {
                "name": f"img{i}.png",
                "gt": gt,
                "pred": pred,
                "view_true": view_true,
                "view_pred": (i % 3) if i % 4 else 0,
            }
        )
    return images


def test_deterministic_for_a_seed():
    images = make_images()
    a = bootstrap_metrics(images, NAMES, n_resamples=20, seed=3, keep_values=True)
    b = bootstrap_metrics(images, NAMES, n_resamples=20, seed=3, keep_values=True)
    c = bootstrap_metrics(images, NAMES, n_resamples=20, seed=4, keep_values=True)
    assert a == b
    assert a["map50"]["values"] != c["map50"]["values"]


def test_interval_contains_point_estimate():
    images = make_images()
    r = bootstrap_metrics(
        images, NAMES, n_resamples=40, seed=0, metrics=("map50", "map50_95", "view_accuracy", "f1")
    )
    for m, s in r.items():
        assert s["low"] <= s["point"] <= s["high"], m
        assert s["low"] < s["high"], m
        assert s["n_valid"] == 40
    assert r["view_accuracy"]["point"] == pytest.approx(
        9 / 11
    )  # i = 4 and 8 are wrong, i = 5 missing


def test_paired_identical_inputs_give_exact_zero():
    images = make_images()
    shuffled = images[::-1]  # aligned by name, not by position
    r = paired_bootstrap(images, shuffled, NAMES, n_resamples=15, seed=1)
    for s in r.values():
        assert (s["diff"], s["mean"], s["low"], s["high"]) == (0.0, 0.0, 0.0, 0.0)


def test_paired_uses_the_same_resamples():
    images = make_images()
    worse = [dict(img, pred=[]) if i < 4 else img for i, img in enumerate(images)]
    r = paired_bootstrap(images, worse, NAMES, n_resamples=15, seed=1, metrics=("map50",))
    single_a = bootstrap_metrics(images, NAMES, 15, 1, ("map50",), keep_values=True)
    single_b = bootstrap_metrics(worse, NAMES, 15, 1, ("map50",), keep_values=True)
    va, vb = single_a["map50"]["values"], single_b["map50"]["values"]
    diffs = [x - y for x, y in zip(va, vb, strict=True)]
    assert r["map50"]["diff"] == single_a["map50"]["point"] - single_b["map50"]["point"]
    assert r["map50"]["mean"] == pytest.approx(sum(diffs) / len(diffs))
    assert r["map50"]["diff"] > 0


def test_paired_rejects_different_image_sets():
    images = make_images()
    other = make_images()
    other[0] = dict(other[0], name="elsewhere.png")
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap(images, other, NAMES, n_resamples=2, seed=0)
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap(images, images[:-1], NAMES, n_resamples=2, seed=0)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown metrics"):
        bootstrap_metrics(make_images(), NAMES, 2, 0, metrics=("auc",))


def test_resampler_equals_coco_evaluation_of_the_resampled_images():
    """The fast path gives exactly what evaluating the resampled set from scratch does."""
    import numpy as np

    from echomtl.evaluation.detection_metrics import (
        CocoResampler,
        coco_map_prepared,
        prepare_images,
    )

    rng = np.random.default_rng(7)
    images = []
    for i in range(30):
        gt = [[int(rng.integers(0, 3)), *_box(rng)] for _ in range(int(rng.integers(0, 3)))]
        pred = [
            [int(rng.integers(0, 3)), float(rng.random()), *_box(rng)]
            for _ in range(int(rng.integers(0, 6)))
        ]
        pred += [
            [c, 0.5 + 0.5 * float(rng.random()), x1 + 1, y1, x2 + 1, y2] for c, x1, y1, x2, y2 in gt
        ]
        images.append({"name": f"i{i}", "gt": gt, "pred": pred})
    prepared = prepare_images(images, 3)
    resampler = CocoResampler(prepared, 3)
    for idx in [np.arange(30), *rng.integers(0, 30, size=(5, 30))]:
        direct = coco_map_prepared([prepared[i] for i in idx], ["a", "b", "c"])
        assert resampler.map(idx) == (direct["map50"], direct["map50_95"])


def _box(rng):
    x1, y1 = rng.uniform(0, 80, size=2)
    w, h = rng.uniform(5, 40, size=2)
    return [float(x1), float(y1), float(x1 + w), float(y1 + h)]


def _clustered_views(n_patients: int, per_patient: int, rho: float, seed: int) -> tuple:
    """View predictions whose correctness has intra-patient correlation ``rho`` (accuracy 0.7):
    with probability ``rho`` a patient's images share one coin, otherwise each has its own."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images, groups = [], []
    for p in range(n_patients):
        shared = rng.random() < 0.7
        for i in range(per_patient):
            correct = shared if rng.random() < rho else rng.random() < 0.7
            images.append({"name": f"p{p}_{i}", "gt": [], "pred": [], "view_true": 0,
                           "view_pred": 0 if correct else 1})  # fmt: skip
            groups.append(f"p{p}")
    return images, groups


def test_cluster_bootstrap_widens_with_intra_patient_correlation():
    import math

    k, m = 40, 10
    widths: dict[str, list[float]] = {"image": [], "patient": []}
    for rho in (0.0, 0.5, 1.0):
        images, groups = _clustered_views(k, m, rho, seed=1)
        for unit, g in (("image", None), ("patient", groups)):
            r = bootstrap_metrics(images, [], 400, seed=0, metrics=["view_accuracy"], groups=g)
            widths[unit].append(r["view_accuracy"]["se"])
    # the image bootstrap ignores the clustering: its SE stays near sqrt(p(1-p)/(k m))
    image_se = math.sqrt(0.7 * 0.3 / (k * m))
    assert all(0.7 * image_se < w < 1.3 * image_se for w in widths["image"])
    # the patient bootstrap follows the design effect 1 + (m - 1) rho
    assert widths["patient"][0] < widths["patient"][1] < widths["patient"][2]
    assert widths["patient"][2] == pytest.approx(math.sqrt(m) * image_se, rel=0.35)
    assert widths["patient"][0] == pytest.approx(image_se, rel=0.35)


def test_paired_cluster_bootstrap_reports_a_minimum_detectable_difference():
    a, groups = _clustered_views(30, 5, 1.0, seed=2)
    b, _ = _clustered_views(30, 5, 1.0, seed=3)
    for img_b, img_a in zip(b, a, strict=True):
        img_b["name"] = img_a["name"]
    r = paired_bootstrap(a, b, [], 300, seed=0, metrics=["view_accuracy"], groups=groups)
    entry = r["view_accuracy"]
    assert entry["mdd"] == pytest.approx(2.8 * entry["se"]) and entry["se"] > 0
    with pytest.raises(ValueError, match="groups has 3 labels for 150 images"):
        paired_bootstrap(a, b, [], 10, metrics=["view_accuracy"], groups=["x", "y", "z"])
