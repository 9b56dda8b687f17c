"""coco_map against pycocotools computed directly; P/R/F1 on a hand-checked case."""

import contextlib
import io
import math

import numpy as np
import pytest

from echomtl.evaluation.detection_metrics import coco_map, precision_recall_f1

NAMES = ["AR", "MR", "PR"]

# 5 images, 3 classes: true positives, a wrong-class FP, a duplicate, a miss, an image without GT.
IMAGES = [
    {
        "name": "a.png",
        "gt": [[0, 10, 10, 50, 50], [1, 60, 60, 90, 90]],
        "pred": [
            [0, 0.9, 12, 11, 50, 52],
            [1, 0.8, 60, 62, 88, 90],
            [0, 0.3, 60, 60, 90, 90],
            [2, 0.6, 10, 10, 50, 50],
        ],
    },
    {
        "name": "b.png",
        "gt": [[0, 20, 20, 70, 80]],
        "pred": [[0, 0.7, 25, 20, 70, 85], [0, 0.65, 20, 20, 70, 80]],
    },
    {
        "name": "c.png",
        "gt": [[2, 5, 5, 40, 30], [1, 50, 10, 80, 40]],
        "pred": [[2, 0.4, 6, 5, 40, 31], [1, 0.55, 52, 14, 85, 40]],
    },
    {"name": "d.png", "gt": [], "pred": [[1, 0.5, 0, 0, 30, 30], [0, 0.2, 40, 40, 60, 60]]},
    {"name": "e.png", "gt": [[1, 30, 30, 60, 70]], "pred": [[1, 0.35, 28, 33, 62, 66]]},
]


def pycocotools_reference(images, n_classes):
    """(AP50, AP50:95, per-class [K, 2]) from pycocotools run on the same data."""
    coco_mod = pytest.importorskip("pycocotools.coco")
    eval_mod = pytest.importorskip("pycocotools.cocoeval")
    ds = {
        "images": [{"id": i + 1, "width": 100, "height": 100} for i in range(len(images))],
        "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)],
        "annotations": [],
    }
    for i, img in enumerate(images):
        for c, x1, y1, x2, y2 in img["gt"]:
            ds["annotations"].append(
                {
                    "id": len(ds["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": c + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    dts = [
        {"image_id": i + 1, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
        for i, img in enumerate(images)
        for c, s, x1, y1, x2, y2 in img["pred"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = ds
        gt.createIndex()
        ev = eval_mod.COCOeval(gt, gt.loadRes(dts), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # area all, maxDets 100
    per_class = []
    for k in range(n_classes):
        p = prec[:, :, k]
        per_class.append((p[0].mean(), p.mean()) if (p > -1).all() else (math.nan, math.nan))
    return ev.stats[1], ev.stats[0], np.array(per_class)


def check_against_pycocotools(images, names):
    ours = coco_map(images, names)
    ap50, ap, per_class = pycocotools_reference(images, len(names))
    assert ours["map50"] == pytest.approx(ap50, abs=1e-6)
    assert ours["map50_95"] == pytest.approx(ap, abs=1e-6)
    for k, name in enumerate(names):
        got = ours["per_class"][name]
        np.testing.assert_allclose([got["ap50"], got["ap50_95"]], per_class[k], atol=1e-6)
    return ours


def test_coco_map_matches_pycocotools():
    ours = check_against_pycocotools(IMAGES, NAMES)
    assert 0.0 < ours["map50_95"] < ours["map50"] < 1.0  # a non-trivial case
    assert [ours["per_class"][n]["n_gt"] for n in NAMES] == [2, 3, 1]


def test_class_without_gt_is_nan_and_excluded():
    images = [
        {
            "gt": [[c, x1, y1, x2, y2] for c, x1, y1, x2, y2 in img["gt"] if c != 2],
            "pred": img["pred"],
        }
        for img in IMAGES
    ]
    ours = check_against_pycocotools(images, NAMES)
    assert math.isnan(ours["per_class"]["PR"]["ap50"])
    assert ours["per_class"]["PR"]["n_gt"] == 0
    expected = np.mean([ours["per_class"][n]["ap50"] for n in ("AR", "MR")])
    assert ours["map50"] == pytest.approx(expected, abs=1e-12)


def test_perfect_predictions_give_one():
    images = [
        {"gt": img["gt"], "pred": [[c, 0.9, x1, y1, x2, y2] for c, x1, y1, x2, y2 in img["gt"]]}
        for img in IMAGES
    ]
    ours = coco_map(images, NAMES)
    assert ours["map50"] == pytest.approx(1.0)
    assert ours["map50_95"] == pytest.approx(1.0)


def test_no_predictions_and_no_gt():
    no_pred = coco_map([{"gt": img["gt"], "pred": []} for img in IMAGES], NAMES)
    assert no_pred["map50"] == 0.0 and no_pred["map50_95"] == 0.0
    no_gt = coco_map([{"gt": [], "pred": img["pred"]} for img in IMAGES], NAMES)
    assert math.isnan(no_gt["map50"]) and math.isnan(no_gt["map50_95"])


def test_duplicated_images_count_as_distinct():
    once = coco_map(IMAGES, NAMES)
    twice = coco_map(IMAGES + IMAGES, NAMES)
    assert twice["map50"] == pytest.approx(once["map50"], abs=1e-9)
    assert twice["per_class"]["MR"]["n_gt"] == 6


def test_bad_class_id_raises():
    with pytest.raises(ValueError, match="class id"):
        coco_map([{"gt": [[3, 0, 0, 1, 1]], "pred": []}], NAMES)


# Hand-checked: class 0 has 2 GT and predictions .9 TP, .6 TP, .4 FP; class 1 has 2 GT (one
# never predicted) and predictions .8 TP, .3 FP (wrong class on a class-0 box).
# Mean F1 by threshold: .9 -> 1/3, .8 -> 2/3, .6 -> 5/6 (best), .4 -> 11/15, .3 -> .65.
PRF_IMAGES = [
    {
        "gt": [[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]],
        "pred": [[0, 0.9, 0, 0, 10, 10], [1, 0.8, 20, 20, 30, 30], [0, 0.4, 50, 50, 60, 60]],
    },
    {
        "gt": [[0, 0, 0, 10, 10], [1, 40, 40, 50, 50]],
        "pred": [[0, 0.6, 0, 0, 10, 10], [1, 0.3, 0, 0, 10, 10]],
    },
]


def test_precision_recall_f1_hand_checked():
    r = precision_recall_f1(PRF_IMAGES, ["AR", "MR", "PR"])  # PR has no GT: not in the means
    assert r["best_conf"] == pytest.approx(0.6)
    assert r["precision"] == pytest.approx(1.0)
    assert r["recall"] == pytest.approx(0.75)
    assert r["f1"] == pytest.approx(5 / 6)


def test_greedy_matching_duplicate_is_false_positive():
    images = [
        {
            "gt": [[0, 0, 0, 10, 10]],
            "pred": [[0, 0.5, 0, 0, 10, 10], [0, 0.9, 0, 0, 10, 9]],  # both overlap the GT
        }
    ]
    r = precision_recall_f1(images, ["AR"])
    # the higher score takes the GT, the other is a FP: best is the .9 threshold alone
    assert (r["precision"], r["recall"], r["f1"], r["best_conf"]) == (1.0, 1.0, 1.0, 0.9)


def test_precision_recall_f1_edge_cases():
    r = precision_recall_f1([{"gt": [[0, 0, 0, 1, 1]], "pred": []}], ["AR"])
    assert (r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0)
    assert math.isnan(r["best_conf"])
    r = precision_recall_f1([{"gt": [], "pred": [[0, 0.5, 0, 0, 1, 1]]}], ["AR"])
    assert all(math.isnan(v) for v in r.values())


def test_coco_keeps_100_detections_per_image_and_class():
    far = [[0, 0.9, 200 + 3 * k, 200, 202 + 3 * k, 202] for k in range(100)]  # 100 better FPs
    tp = [0, 0.1, 0, 0, 10, 10]
    gt = [[0, 0, 0, 10, 10]]
    assert coco_map([{"gt": gt, "pred": [*far, tp]}], ["AR", "MR"])["map50"] == 0.0
    other_class = [[1, *p[1:]] for p in far]  # same FPs in another class do not push it out
    assert coco_map([{"gt": gt, "pred": [*other_class, tp]}], ["AR", "MR"])["map50"] == 1.0
