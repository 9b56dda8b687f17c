"""YOLOv5 v7.0 detection loss (ComputeLoss) and the view-classification loss.

``YoloLoss`` follows the YOLOv5 v7.0 ``ComputeLoss`` (docs/yolov5.md, "Loss"):

- assignment (``build_targets``): every target is tried against the 3 anchors of every level and
  kept where max(r, 1/r) < anchor_t (4.0) for width and height (r = gt wh / anchor wh, grid units);
  each kept (target, anchor) is assigned to its own cell and to up to two neighbour cells with
  offset g = 0.5, using the reference's masks: left when ``gx % 1 < 0.5 and gx > 1``, right when
  ``(nx - gx) % 1 < 0.5 and nx - gx > 1`` (same for y, up/down). Consequences kept on purpose so
  that the loss equals the reference's: a fractional part of exactly 0.5 gets no neighbour on that
  axis; no neighbour is ever taken across the image border; and at an exactly integer centre
  coordinate both masks are true, so the cell to the left is added *and* the "right" offset rounds
  back onto the own cell, i.e. the own cell appears twice (counted twice in the box/class means).
  Positives are ordered offset group (own, left, up, right, down), then anchor, then target.
- box: mean over positives of 1 - CIoU (:func:`ciou_xywh`, YOLOv5's formula on xywh boxes), with
  pxy = 2 sigmoid - 0.5, pwh = (2 sigmoid)^2 anchor (grid units).
- objectness: BCE-with-logits over all cells; target CIoU.detach().clamp(0) at positives (gr = 1),
  0 elsewhere; level balance [4.0, 1.0, 0.4]. When several positives land on the same
  (image, anchor, cell), the *last* one in the order above wins; the reference gets this from a
  plain ``tobj[b, a, gj, gi] = iou`` (undefined order with duplicates on GPU), here it is made
  explicit and deterministic on every device.
- class: BCE-with-logits over positives with one-hot targets (label smoothing 0 by default), only
  when nc > 1.
- gains: box 0.05 * 3/nl, cls 0.5 * nc/80 * 3/nl, obj 1.0 * (imgsz/640)^2 * 3/nl;
  loss = (lbox + lobj + lcls) * batch_size.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from echomtl.models.yolo import Detect

DEFAULT_HYP: dict[str, float] = {
    "box": 0.05,
    "obj": 1.0,
    "cls": 0.5,
    "anchor_t": 4.0,
    "label_smoothing": 0.0,
}
BALANCE: tuple[float, ...] = (4.0, 1.0, 0.4)  # P3, P4, P5
NEIGHBOUR_G = 0.5
# own cell, left, up, right, down (subtracted from the centre, as in the reference)
_OFFSETS = (
    torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) * NEIGHBOUR_G
)


class LevelTargets(NamedTuple):
    """Assigned positives of one level (all 1-D over positives, except tbox/anchors [n, 2|4])."""

    b: Tensor  # image index
    a: Tensor  # anchor index
    gj: Tensor  # cell row
    gi: Tensor  # cell column
    tbox: Tensor  # [n, 4]: centre relative to the cell's corner, wh (grid units)
    anchors: Tensor  # [n, 2]: the matched anchor's wh (grid units)
    tcls: Tensor  # class index


class YoloLoss:
    """ComputeLoss of YOLOv5 v7.0: ``loss, parts = YoloLoss(detect, imgsz)(det, targets)``.

    ``det``: raw outputs ``[B, na, ny, nx, 5 + nc]`` per level; ``targets``: ``[M, 6]`` rows
    ``(image_index, class_id, cx, cy, w, h)`` normalised to [0, 1]. ``hyp`` overrides the keys of
    ``DEFAULT_HYP`` (other keys are ignored, so a full training hyp dict can be passed). ``parts``
    holds the gained components (before ``* batch_size``) as floats.
    """

    def __init__(self, detect: Detect, imgsz: int, hyp: dict | None = None) -> None:
        h = {**DEFAULT_HYP, **(hyp or {})}
        self.detect = detect
        self.imgsz = imgsz
        self.nc, self.na, self.nl = detect.nc, detect.na, detect.nl
        if self.nl != len(BALANCE):
            raise ValueError(f"YoloLoss expects {len(BALANCE)} levels, Detect has {self.nl}")
        self.balance = BALANCE
        self.anchor_t = float(h["anchor_t"])
        self.box_gain = h["box"] * 3 / self.nl
        self.cls_gain = h["cls"] * self.nc / 80 * 3 / self.nl
        self.obj_gain = h["obj"] * (imgsz / 640) ** 2 * 3 / self.nl
        eps = float(h["label_smoothing"])
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps

    def _grid_anchors(self) -> Tensor:
        """Anchors in grid units ``[nl, na, 2]`` (pixels / stride)."""
        return self.detect.anchors / self.detect.stride.view(-1, 1, 1)

    @torch.no_grad()
    def build_targets(self, det: list[Tensor], targets: Tensor) -> list[LevelTargets]:
        """Assign targets to (image, anchor, cell) per level; see the module docstring."""
        na, nt = self.na, targets.shape[0]
        device = targets.device
        targets = targets.to(torch.float32)
        anchors_all = self._grid_anchors().to(device)
        ai = torch.arange(na, device=device, dtype=torch.float32).view(na, 1, 1).expand(na, nt, 1)
        tt = torch.cat((targets.unsqueeze(0).expand(na, nt, 6), ai), 2)  # [na, nt, 7]
        off = _OFFSETS.to(device)
        g = NEIGHBOUR_G
        out = []
        for i, p in enumerate(det):
            ny, nx = int(p.shape[2]), int(p.shape[3])
            gain = torch.tensor([1.0, 1.0, nx, ny, nx, ny, 1.0], device=device)
            t = tt * gain
            r = t[..., 4:6] / anchors_all[i].view(na, 1, 2)
            t = t[torch.max(r, 1 / r).amax(2) < self.anchor_t]  # [m, 7]
            gxy = t[:, 2:4]
            gxi = gain[2:4] - gxy
            lo = (gxy % 1 < g) & (gxy > 1)  # left / up
            hi = (gxi % 1 < g) & (gxi > 1)  # right / down
            ones = torch.ones_like(lo[:, 0])
            mask = torch.stack((ones, lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]))  # [5, m]
            t = t.unsqueeze(0).expand(5, -1, -1)[mask]
            offsets = off.view(5, 1, 2).expand(5, gxy.shape[0], 2)[mask]
            gxy, gwh = t[:, 2:4], t[:, 4:6]
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, nx - 1)
            gj = gij[:, 1].clamp(0, ny - 1)
            a = t[:, 6].long()
            out.append(
                LevelTargets(
                    b=t[:, 0].long(),
                    a=a,
                    gj=gj,
                    gi=gi,
                    tbox=torch.cat((gxy - gij, gwh), 1),
                    anchors=anchors_all[i][a],
                    tcls=t[:, 1].long(),
                )
            )
        return out

    def __call__(self, det: list[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Total loss ``(lbox + lobj + lcls) * bs`` and the gained parts (floats)."""
        p0 = det[0]
        levels = self.build_targets(det, targets.to(p0.device))
        lbox = p0.new_zeros(())
        lobj = p0.new_zeros(())
        lcls = p0.new_zeros(())
        for i, (p, lt) in enumerate(zip(det, levels, strict=True)):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=p.device)
            n = lt.b.shape[0]
            if n:
                ps = p[lt.b, lt.a, lt.gj, lt.gi]  # [n, 5 + nc]
                pxy = ps[:, 0:2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * lt.anchors
                ciou = ciou_xywh(torch.cat((pxy, pwh), 1), lt.tbox)
                lbox = lbox + (1.0 - ciou).mean()
                iou = ciou.detach().clamp(0).to(tobj.dtype)
                _write_last_wins(tobj, lt, iou)
                if self.nc > 1:
                    pcls = ps[:, 5:]
                    tc = torch.full_like(pcls, self.cn)
                    tc[torch.arange(n, device=p.device), lt.tcls] = self.cp
                    lcls = lcls + F.binary_cross_entropy_with_logits(pcls, tc)
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj) * self.balance[i]
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain
        lcls = lcls * self.cls_gain
        bs = p0.shape[0]
        box, obj, cls = torch.stack((lbox, lobj, lcls)).detach().tolist()  # one sync
        return (lbox + lobj + lcls) * bs, {"box": box, "obj": obj, "class": cls}


def ciou_xywh(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired xywh boxes ``[n, 4]``, as YOLOv5 v7.0 computes it.

    The aspect term ``atan(w / h)`` takes each box's own width and height. torchvision's
    ``complete_box_iou_loss`` takes xyxy boxes and recomputes the height as ``y2 - y1``, which is
    exactly 0 in float32 for a predicted box thinner than the float spacing of its coordinates
    (its sigmoid near 0): ``atan(w / 0)`` is finite, its gradient is NaN, gradient clipping cannot
    remove a NaN, and the run's weights become NaN (a third seed of GradNorm diverged so, at its
    63rd step). The height in the ratio is kept above ``eps`` for a box whose sigmoid underflowed
    to 0 exactly. The IoU itself is torchvision's (areas from the corners, so that it never
    exceeds 1 by rounding); for ordinary boxes the value equals torchvision's to float precision
    (``tests/test_losses.py``).
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    left1, right1, top1, bottom1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    left2, right2, top2, bottom2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(right1, right2) - torch.maximum(left1, left2)).clamp(min=0) * (
        torch.minimum(bottom1, bottom2) - torch.maximum(top1, top2)
    ).clamp(min=0)
    # the areas from the corners, as the intersection is: IoU never exceeds 1 by rounding
    area1 = (right1 - left1) * (bottom1 - top1)
    area2 = (right2 - left2) * (bottom2 - top2)
    iou = inter / (area1 + area2 - inter + eps)
    # the smallest enclosing box's squared diagonal, and the centres' squared distance
    cw = torch.maximum(right1, right2) - torch.minimum(left1, left2)
    ch = torch.maximum(bottom1, bottom2) - torch.minimum(top1, top2)
    diagonal2 = cw**2 + ch**2 + eps
    centres2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    aspect = (4 / math.pi**2) * (
        torch.atan(w2 / h2.clamp(min=eps)) - torch.atan(w1 / h1.clamp(min=eps))
    ) ** 2
    with torch.no_grad():
        trade = aspect / (aspect - iou + (1 + eps)).clamp(min=eps)
    return iou - (centres2 / diagonal2 + aspect * trade)


def _write_last_wins(tobj: Tensor, lt: LevelTargets, iou: Tensor) -> None:
    """``tobj[b, a, gj, gi] = iou`` where, for repeated cells, the last positive wins."""
    _, na, ny, nx = tobj.shape
    lin = ((lt.b * na + lt.a) * ny + lt.gj) * nx + lt.gi
    n = lin.shape[0]
    if n > 1:
        srt, order = torch.sort(lin, stable=True)
        last = torch.ones_like(srt, dtype=torch.bool)
        last[:-1] = srt[1:] != srt[:-1]
        keep = order[last]
        lin, iou = lin[keep], iou[keep]
    tobj.view(-1)[lin] = iou


def view_loss(logits: Tensor, views: Tensor) -> Tensor:
    """Cross-entropy over images with a view label (``-1`` = missing, ignored).

    Mean over the labelled images; with none in the batch the result is a zero still connected to
    the graph (its gradient is zero), so a balancer's backward never fails. No host sync.
    """
    views = views.to(device=logits.device, dtype=torch.long)
    total = F.cross_entropy(logits, views, ignore_index=-1, reduction="sum")
    count = (views != -1).sum().clamp(min=1)
    return total / count
