"""Post-processing of decoded YOLOv5 outputs: confidence filter + class-aware NMS.

Follows the YOLOv5 v7.0 validation convention (conf_thres 0.001, NMS IoU 0.6, max_det 300,
class-aware NMS, score = objectness * class probability, multi-label when nc > 1), so that the
numbers we report are comparable with the reference recipe.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert

__all__ = ["postprocess"]


def postprocess(
    decoded: Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    multi_label: bool | None = None,
    max_nms: int = 30000,
) -> list[Tensor]:
    """Turn decoded predictions into per-image detections.

    Args:
        decoded: ``[B, N, 5 + nc]``: ``cx, cy, w, h`` (input pixels), sigmoid objectness, sigmoid
            class probabilities (the output of ``model.decode``).
        conf_thres: a candidate needs objectness > conf_thres and score (obj * cls) > conf_thres.
        iou_thres: IoU above which a same-class box with a lower score is suppressed.
        max_det: at most this many detections per image (highest scores kept).
        multi_label: ``True`` emits one candidate per (box, class) pair whose score exceeds
            conf_thres, as YOLOv5's val.py does (it raises mAP slightly at low thresholds);
            ``False`` keeps only the best class per box. ``None`` (default) means
            ``nc > 1``, the YOLOv5 val convention.
        max_nms: at most this many candidates (highest scores) enter NMS, as in YOLOv5; it only
            bounds the cost for untrained models at the 0.001 threshold.

    Returns:
        One float tensor ``[k, 6]`` per image: ``x1, y1, x2, y2, score, class`` (class as a float),
        sorted by decreasing score.
    """
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must be [B, N, 5 + nc] with nc >= 1, got {tuple(decoded.shape)}")
    nc = decoded.shape[-1] - 5
    if multi_label is None:
        multi_label = nc > 1
    out: list[Tensor] = []
    for x in decoded:  # one image at a time; everything inside is vectorised over boxes
        x = x[x[:, 4] > conf_thres]
        if x.shape[0] == 0:
            out.append(decoded.new_zeros((0, 6)))
            continue
        scores = x[:, 5:] * x[:, 4:5]  # [n, nc]
        boxes = box_convert(x[:, :4], in_fmt="cxcywh", out_fmt="xyxy")
        if multi_label:
            i, j = (scores > conf_thres).nonzero(as_tuple=True)
            boxes, conf, cls = boxes[i], scores[i, j], j
        else:
            conf, cls = scores.max(dim=1)
            keep = conf > conf_thres
            boxes, conf, cls = boxes[keep], conf[keep], cls[keep]
        if conf.numel() > max_nms:
            top = conf.topk(max_nms).indices
            boxes, conf, cls = boxes[top], conf[top], cls[top]
        keep = batched_nms(boxes.float(), conf.float(), cls, iou_thres)[:max_det]
        out.append(torch.cat([boxes[keep], conf[keep, None], cls[keep, None].to(boxes.dtype)], 1))
    return out
