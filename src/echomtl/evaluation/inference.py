"""Inference over a cached split and assembly of the evaluation metrics.

``predict`` produces the ``images`` list of ``predictions_<split>.json`` (docs/architecture.md):
boxes are mapped from letterboxed model-input pixels back to original-image pixels with the
cache's ``letterbox`` rows (letterboxed = original * ratio + pad), so every metric is computed in
the coordinates the annotations were made in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from echomtl.evaluation.classification_metrics import view_metrics
from echomtl.evaluation.detection_metrics import (
    coco_map_prepared,
    precision_recall_f1_prepared,
    prepare_images,
)
from echomtl.evaluation.nms import postprocess

__all__ = ["predict", "evaluate_predictions", "unletterbox_boxes"]


def unletterbox_boxes(
    xyxy: np.ndarray, ratio: float, pad_x: float, pad_y: float, width: int, height: int
) -> np.ndarray:
    """Letterboxed ``[n, 4]`` x1, y1, x2, y2 -> original-image pixels, clipped to the image."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = ((b[:, [0, 2]] - pad_x) / ratio).clip(0.0, float(width))
    b[:, [1, 3]] = ((b[:, [1, 3]] - pad_y) / ratio).clip(0.0, float(height))
    return b


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, indices) from a collate batch, given as a dict or as the 4-tuple of the contract."""
    if isinstance(batch, Mapping):
        return batch["images"], batch["indices"]
    if isinstance(batch, Sequence) and len(batch) == 4:
        return batch[0], batch[3]
    raise TypeError("a batch must be a dict or a tuple (images, targets, views, indices)")


def predict(
    model: nn.Module,
    loader: Iterable,
    cache: Mapping[str, np.ndarray],
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Run ``model`` over ``loader`` and return one predictions-JSON image dict per image.

    The model must already be on ``device`` (only the images are moved). It runs in eval mode
    under ``torch.inference_mode``; its previous train/eval mode is restored afterwards. Images
    are returned in loader order. ``view_pred``/``view_probs`` are None when the model has no
    view head (``out.view_logits is None``), ``pred`` when it has no detector (``out.det`` empty).

    Args:
        cache: the split's cache (``np.load`` of the .npz or an equivalent dict), keys ``boxes``,
            ``views``, ``names``, ``orig_sizes``, ``letterbox``.
    """
    lb = np.asarray(cache["letterbox"], dtype=np.float64)
    sizes = np.asarray(cache["orig_sizes"], dtype=np.int64)
    names = np.asarray(cache["names"])
    views = np.asarray(cache["views"], dtype=np.int64)
    gt_all = np.asarray(cache["boxes"], dtype=np.float64).reshape(-1, 6)
    order = np.argsort(gt_all[:, 0], kind="stable")
    gt_all = gt_all[order]
    starts = np.searchsorted(gt_all[:, 0], np.arange(len(names) + 1), side="left")

    was_training = model.training
    model.eval()
    results: list[dict] = []
    try:
        with torch.inference_mode():
            for batch in loader:
                images, indices = _unpack(batch)
                out = model(images.to(device))
                dets = None
                if out.det:
                    dets = postprocess(
                        model.decode(out.det).float(),
                        conf_thres=conf_thres,
                        iou_thres=iou_thres,
                        max_det=max_det,
                    )
                probs = None
                if out.view_logits is not None:
                    probs = torch.softmax(out.view_logits.float(), dim=1).cpu().numpy()
                for b, idx in enumerate(torch.as_tensor(indices).tolist()):
                    ratio, pad_x, pad_y = lb[idx].tolist()
                    w, h = (int(v) for v in sizes[idx])
                    g = gt_all[starts[idx] : starts[idx + 1]]
                    g_box = unletterbox_boxes(g[:, 2:6], ratio, pad_x, pad_y, w, h)
                    pred = None
                    if dets is not None:
                        d = dets[b].cpu().double().numpy()
                        d_box = unletterbox_boxes(d[:, :4], ratio, pad_x, pad_y, w, h)
                        pred = [
                            [int(c), s, *bx]
                            for c, s, bx in zip(
                                d[:, 5].tolist(), d[:, 4].tolist(), d_box.tolist(), strict=True
                            )
                        ]
                    results.append(
                        {
                            "name": str(names[idx]),
                            "width": w,
                            "height": h,
                            "gt": [
                                [int(c), *bx]
                                for c, bx in zip(g[:, 1].tolist(), g_box.tolist(), strict=True)
                            ],
                            "pred": pred,
                            "view_true": int(views[idx]),
                            "view_pred": None if probs is None else int(probs[b].argmax()),
                            "view_probs": None if probs is None else probs[b].tolist(),
                        }
                    )
    finally:
        model.train(was_training)
    return results


def evaluate_predictions(
    images: Sequence[dict], class_names: Sequence[str], view_names: Sequence[str]
) -> dict:
    """The ``detection`` and ``classification`` parts of ``metrics_<split>.json``.

    ``detection`` = COCO mAP (``coco_map``) + P/R/F1/best_conf (``precision_recall_f1``);
    ``classification`` = ``view_metrics`` or None when no image has a view prediction;
    ``detection`` None when no image has a detection list (a model without a detector).
    """
    detection = None
    if any(img.get("pred") is not None for img in images):
        prepared = prepare_images(images, len(class_names))
        detection = coco_map_prepared(prepared, class_names)
        detection.update(precision_recall_f1_prepared(prepared, len(class_names)))
    classification = None
    if any(img.get("view_pred") is not None for img in images):
        classification = view_metrics(
            [img["view_true"] for img in images], [img["view_pred"] for img in images], view_names
        )
    return {"detection": detection, "classification": classification}
