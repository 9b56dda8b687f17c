"""Detection metrics: COCO mAP (faster-coco-eval) and YOLOv5-style precision / recall / F1.

Input is the per-image form of ``predictions_<split>.json`` (docs/architecture.md): each image dict
has ``"gt": [[cls, x1, y1, x2, y2], ...]`` and ``"pred": [[cls, score, x1, y1, x2, y2], ...]`` in
original-image pixels. Images are identified by their *position* in the list, never by name, so a
bootstrap resample that contains the same image twice evaluates the copies as distinct images.

Conventions (see also docs/architecture.md and the reference's "Evaluation conventions"):
- mAP is COCO's: 101-point interpolated AP, IoU thresholds 0.50:0.05:0.95, area range "all",
  at most 100 detections per image *and class* (COCO's maxDets=100 is applied to each
  image/category pair, because COCO evaluates categories separately); lower-scored detections
  beyond that are ignored. We keep that convention rather than raise maxDets, so the numbers are
  standard COCO numbers.
- A class with no ground truth in the evaluated set has an undefined AP: NaN in ``per_class`` and
  excluded from the class mean (COCO convention; its false positives still cost nothing).
  When no class has ground truth the means are NaN.
- P/R/F1 follow YOLOv5: greedy matching by score at IoU >= 0.5 within a class, then the single
  confidence threshold that maximises the class-mean F1; the means run over the classes that
  have ground truth. They use all detections (no 100 cap).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faster_coco_eval.faster_eval_api_cpp as _faster_cpp
import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

__all__ = [
    "coco_map",
    "coco_map_prepared",
    "precision_recall_f1",
    "precision_recall_f1_prepared",
    "prepare_images",
    "PreparedImage",
]

_COCO_AREA_ALL = [0.0, 1e5**2]  # COCO's "all" area range
_COCO_MAX_DETS = 100


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One image's boxes as arrays plus ready-made COCO fields (built once, reused by bootstrap).

    ``gt`` [k, 5] float64 ``cls, x1, y1, x2, y2``; ``pred`` [m, 6] float64
    ``cls, score, x1, y1, x2, y2``; ``gt_coco`` rows ``(category_id, [x, y, w, h], area)`` and
    ``dt_coco`` rows ``(category_id, score, [x, y, w, h], area)`` with category_id = cls + 1.
    """

    gt: np.ndarray
    pred: np.ndarray
    gt_coco: tuple
    dt_coco: tuple


def _silent(*_args: object, **_kwargs: object) -> None:
    """Swallow faster-coco-eval's progress messages."""


def _xyxy_to_coco(b: np.ndarray) -> np.ndarray:
    """[n, 4] x1, y1, x2, y2 -> [n, 4] x, y, w, h (COCO bbox)."""
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def prepare_images(images: Sequence[dict], n_classes: int) -> list[PreparedImage]:
    """Convert prediction-JSON image dicts once (bootstrap reuses the result for every resample).

    Raises ValueError for a class id outside ``[0, n_classes)``.
    """
    out: list[PreparedImage] = []
    for i, img in enumerate(images):
        gt = np.asarray(img.get("gt") or [], dtype=np.float64).reshape(-1, 5)
        pred = np.asarray(img.get("pred") or [], dtype=np.float64).reshape(-1, 6)
        for what, cls in (("gt", gt[:, 0]), ("pred", pred[:, 0])):
            if cls.size and (cls.min() < 0 or cls.max() >= n_classes or np.any(cls % 1)):
                name = img.get("name", "?")
                raise ValueError(f"image {i} ({name}): {what} class id outside 0..{n_classes - 1}")
        g_box, p_box = _xyxy_to_coco(gt[:, 1:5]), _xyxy_to_coco(pred[:, 2:6])
        gt_coco = tuple(
            zip(
                (gt[:, 0].astype(int) + 1).tolist(),
                g_box.tolist(),
                (g_box[:, 2] * g_box[:, 3]).tolist(),
                strict=True,
            )
        )
        dt_coco = tuple(
            zip(
                (pred[:, 0].astype(int) + 1).tolist(),
                pred[:, 1].tolist(),
                p_box.tolist(),
                (p_box[:, 2] * p_box[:, 3]).tolist(),
                strict=True,
            )
        )
        out.append(PreparedImage(gt, pred, gt_coco, dt_coco))
    return out


def _coco_eval(prepared: Sequence[PreparedImage], n_classes: int, separate: bool) -> Any:
    """A COCOeval (bbox) on in-memory data, evaluated (area "all", maxDets 100)."""
    n_img = len(prepared)
    images = [{"id": i + 1, "width": 0, "height": 0} for i in range(n_img)]
    # COCO category ids are class index + 1 (COCO files are 1-based; 0 is avoided on purpose).
    categories = [{"id": c + 1, "name": str(c)} for c in range(n_classes)]

    # Fresh dicts on every call: COCO adds keys to them. Ids are 1-based (0 means "unmatched").
    gt_anns = [
        {"id": k, "image_id": i, "category_id": c, "bbox": b, "area": a, "iscrowd": 0}
        for k, (i, (c, b, a)) in enumerate(
            ((i, row) for i, p in enumerate(prepared, 1) for row in p.gt_coco), 1
        )
    ]
    dt_anns = [
        {"id": k, "image_id": i, "category_id": c, "score": s, "bbox": b, "area": a, "iscrowd": 0}
        for k, (i, (c, s, b, a)) in enumerate(
            ((i, row) for i, p in enumerate(prepared, 1) for row in p.dt_coco), 1
        )
    ]
    coco_gt = COCO(
        {"images": images, "annotations": gt_anns, "categories": categories}, print_function=_silent
    )
    coco_dt = COCO(
        {"images": images, "annotations": dt_anns, "categories": categories}, print_function=_silent
    )
    ev = COCOeval_faster(
        coco_gt, coco_dt, iouType="bbox", print_function=_silent, separate_eval=separate
    )
    # Only the numbers we report: area "all", maxDets 100 (identical to COCO's AP for those).
    ev.params.areaRng = [_COCO_AREA_ALL]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [_COCO_MAX_DETS]
    ev.params.imgIds = list(range(1, n_img + 1))
    ev.params.catIds = list(range(1, n_classes + 1))
    ev.evaluate()
    if not np.isclose(ev.params.iouThrs[0], 0.5):
        raise RuntimeError("unexpected COCO IoU thresholds")
    return ev


def _class_aps(precision: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AP50 and AP50:95 from COCO's precision array (NaN for classes without GT)."""
    prec = np.asarray(precision)[:, :, :, 0, -1]  # [T, R, K]
    valid = (prec > -1).all(axis=(0, 1))  # a class is either fully defined or has no GT
    return np.where(valid, prec[0].mean(axis=0), np.nan), np.where(
        valid, prec.mean(axis=(0, 1)), np.nan
    )


class CocoResampler:
    """COCO mAP of any multiset of the images, at the cost of COCO's accumulation step only.

    COCO evaluation is per image (matching) then global (accumulation). faster-coco-eval's
    ``separate_eval`` keeps the per-image results of its C++ matcher, so a bootstrap resample
    (image indices with repeats) only re-runs its C++ accumulation over the chosen per-image
    results: the same numbers as evaluating the resampled images from scratch (tested), about
    40x faster. Nothing of COCO's arithmetic is re-implemented here.
    """

    def __init__(self, prepared: Sequence[PreparedImage], n_classes: int) -> None:
        self._ev = _coco_eval(prepared, n_classes, separate=True)
        self._per_image = self._ev._evalImgs_cpp  # [category][area][image], flattened
        self._n_img = len(prepared)
        self._n_classes = n_classes
        if len(self._per_image) != n_classes * self._n_img:
            raise RuntimeError("unexpected layout of faster-coco-eval's per-image results")

    def map(self, indices: np.ndarray) -> tuple[float, float]:
        """(mAP@0.5, mAP@0.5:0.95) of the images at ``indices`` (repeats count as copies)."""
        n = self._n_img
        chosen = [self._per_image[k * n + int(i)] for k in range(self._n_classes) for i in indices]
        params = copy.copy(self._ev._paramsEval)
        params.imgIds = list(range(1, len(indices) + 1))
        ap50, ap50_95 = _class_aps(_faster_cpp.COCOevalAccumulate(params, chosen)["precision"])
        return _nanmean(ap50), _nanmean(ap50_95)


def _coco_per_class(prepared: Sequence[PreparedImage], n_classes: int) -> dict[str, np.ndarray]:
    """Run COCOeval (bbox) on in-memory data; per-class AP50, AP50:95 (NaN: no GT) and GT counts."""
    ev = _coco_eval(prepared, n_classes, separate=False)
    ev.accumulate()
    ap50, ap50_95 = _class_aps(ev.eval["precision"])
    n_gt = np.zeros(n_classes, dtype=np.int64)
    for p in prepared:
        n_gt += np.bincount(p.gt[:, 0].astype(int), minlength=n_classes)
    return {"ap50": ap50, "ap50_95": ap50_95, "n_gt": n_gt}


def _nanmean(x: np.ndarray) -> float:
    """Mean over the finite entries; NaN (no warning) when there are none."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def coco_map_prepared(prepared: Sequence[PreparedImage], class_names: Sequence[str]) -> dict:
    """``coco_map`` on arrays from ``prepare_images`` (lets bootstrap skip the conversion)."""
    r = _coco_per_class(prepared, len(class_names))
    per_class = {
        name: {
            "ap50": float(r["ap50"][c]),
            "ap50_95": float(r["ap50_95"][c]),
            "n_gt": int(r["n_gt"][c]),
        }
        for c, name in enumerate(class_names)
    }
    return {
        "map50": _nanmean(r["ap50"]),
        "map50_95": _nanmean(r["ap50_95"]),
        "per_class": per_class,
    }


def coco_map(images: Sequence[dict], class_names: Sequence[str]) -> dict:
    """COCO mAP@0.5 and mAP@0.5:0.95 with faster-coco-eval (bbox), overall and per class.

    Returns ``{"map50", "map50_95", "per_class": {name: {"ap50", "ap50_95", "n_gt"}}}``.
    Classes without ground truth get NaN APs and are left out of the means (module docstring).
    """
    return coco_map_prepared(prepare_images(images, len(class_names)), class_names)


def _match_image(gt: np.ndarray, pred: np.ndarray, iou_thres: float) -> np.ndarray:
    """True-positive flag of each prediction of one image (greedy by score, within class).

    In decreasing score order, each prediction takes the still-unmatched same-class GT box with
    the highest IoU, if that IoU >= iou_thres (the COCO/YOLO greedy rule).
    """
    # torch is imported here, not at the top: the bootstrap jobs that score only mAP and view
    # metrics then start without it (about 2.6 s of each job's start-up)
    import torch
    from torchvision.ops import box_iou

    tp = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return tp
    iou = box_iou(torch.from_numpy(pred[:, 2:6]), torch.from_numpy(gt[:, 1:5])).numpy()
    iou[pred[:, 0][:, None] != gt[:, 0][None, :]] = -1.0
    iou[iou < iou_thres] = -1.0
    candidates = np.flatnonzero((iou >= 0).any(axis=1))
    if candidates.size == 0:
        return tp
    taken = np.zeros(len(gt), dtype=bool)
    order = candidates[np.argsort(-pred[candidates, 1], kind="stable")]
    for d in order:  # only predictions that overlap some GT enough; usually a handful
        row = np.where(taken, -1.0, iou[d])
        g = int(row.argmax())
        if row[g] >= 0:
            tp[d] = True
            taken[g] = True
    return tp


def precision_recall_f1_prepared(
    prepared: Sequence[PreparedImage], n_classes: int, iou: float = 0.5
) -> dict:
    """``precision_recall_f1`` on arrays from ``prepare_images``."""
    n_gt = np.zeros(n_classes, dtype=np.int64)
    cls_l, score_l, tp_l = [], [], []
    for p_img in prepared:
        gt, pred = p_img.gt, p_img.pred
        n_gt += np.bincount(gt[:, 0].astype(int), minlength=n_classes)
        cls_l.append(pred[:, 0].astype(int))
        score_l.append(pred[:, 1])
        tp_l.append(_match_image(gt, pred, iou))
    cls = np.concatenate(cls_l) if cls_l else np.zeros(0, dtype=int)
    score = np.concatenate(score_l) if score_l else np.zeros(0)
    tp = np.concatenate(tp_l) if tp_l else np.zeros(0, dtype=bool)
    classes = np.flatnonzero(n_gt > 0)
    if classes.size == 0:
        return {"precision": math.nan, "recall": math.nan, "f1": math.nan, "best_conf": math.nan}
    if score.size == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "best_conf": math.nan}
    thresholds = np.unique(score)  # ascending; a detection is kept when score >= threshold
    p = np.zeros((classes.size, thresholds.size))
    r = np.zeros_like(p)
    for row, c in enumerate(classes):
        sel = cls == c
        order = np.argsort(-score[sel], kind="stable")
        s_c = score[sel][order]
        cum_tp = np.cumsum(tp[sel][order])
        n_above = np.searchsorted(-s_c, -thresholds, side="right")  # count of s_c >= threshold
        tps = np.where(n_above > 0, cum_tp[np.maximum(n_above - 1, 0)] if s_c.size else 0, 0)
        p[row] = np.divide(tps, n_above, out=np.zeros(thresholds.size), where=n_above > 0)
        r[row] = tps / n_gt[c]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(p), where=denom > 0)
    best = int(f1.mean(axis=0).argmax())  # first maximum: the lowest (most inclusive) threshold
    return {
        "precision": float(p[:, best].mean()),
        "recall": float(r[:, best].mean()),
        "f1": float(f1[:, best].mean()),
        "best_conf": float(thresholds[best]),
    }


def precision_recall_f1(
    images: Sequence[dict], class_names: Sequence[str], iou: float = 0.5
) -> dict:
    """Class-mean precision, recall and F1 at the confidence that maximises the class-mean F1.

    Predictions are matched to GT greedily by score within each class at IoU >= ``iou``; the
    threshold is swept over every distinct predicted score (a detection counts when its score is
    >= the threshold). Means run over classes with at least one GT box (YOLOv5 convention); F1 is
    the mean of the per-class F1s. Returns ``{"precision", "recall", "f1", "best_conf"}``; with GT
    but no predictions P = R = F1 = 0 and best_conf is NaN; with no GT at all everything is NaN.
    """
    n = len(class_names)
    return precision_recall_f1_prepared(prepare_images(images, n), n, iou)
