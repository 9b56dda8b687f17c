"""YoloLoss (ComputeLoss of YOLOv5 v7.0) and view_loss, on hand-checked small cases.

Geometry used throughout: imgsz 128 -> grids 16 (P3, stride 8), 8 (P4), 4 (P5). An 8 x 5 px box
matches only P3 anchor 0 (10 x 13 px): ratios 1.25 / 2.6 < 4, while P3 anchors 1, 2 give
30/5 = 6 and 23/5 = 4.6, and every P4/P5 anchor is further away.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, complete_box_iou

from echomtl.losses import YoloLoss, _write_last_wins, ciou_xywh, view_loss
from echomtl.models.multitask import MultiTaskYolo
from echomtl.models.yolo import Detect

IMGSZ = 128
LN2 = math.log(2.0)


def make_det(bs=1, nc=4, imgsz=IMGSZ, fill=0.0):
    return [torch.full((bs, 3, imgsz // s, imgsz // s, 5 + nc), fill) for s in (8, 16, 32)]


def px_targets(rows, imgsz=IMGSZ):
    """(image, class, cx, cy, w, h) in pixels -> normalised targets."""
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    t[:, 2:] /= imgsz
    return t


def assigned(levels):
    """Ordered list of (level, anchor, gj, gi) positives."""
    return [
        (i, int(a), int(gj), int(gi))
        for i, lt in enumerate(levels)
        for a, gj, gi in zip(lt.a, lt.gj, lt.gi, strict=True)
    ]


@pytest.fixture
def loss4():
    torch.manual_seed(0)
    return YoloLoss(Detect(4, (4, 4, 4)), IMGSZ)


def ciou_reference(b1, b2, eps=1e-7):
    """CIoU of paired xywh boxes, written out (Zheng et al. 2020, YOLOv5's bbox_iou form)."""
    x1, y1, w1, h1 = b1.unbind(-1)
    x2, y2, w2, h2 = b2.unbind(-1)
    l1, r1, t1, d1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    l2, r2, t2, d2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(r1, r2) - torch.max(l1, l2)).clamp(0) * (
        torch.min(d1, d2) - torch.max(t1, t2)
    ).clamp(0)
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    c2 = (torch.max(r1, r2) - torch.min(l1, l2)) ** 2 + (torch.max(d1, d2) - torch.min(t1, t2)) ** 2
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / (c2 + eps) + v * alpha)


# --- assignment -------------------------------------------------------------------------------


def test_box_matching_no_anchor(loss4):
    """120 x 2 px: every anchor's h ratio is >= 13/2 > 4 -> no positive, only obj negatives."""
    torch.manual_seed(1)
    det = [torch.randn_like(p) for p in make_det(bs=2)]
    targets = px_targets([[0, 1, 64, 64, 120, 2], [1, 2, 30, 40, 2, 120]])
    levels = loss4.build_targets(det, targets)
    assert assigned(levels) == []
    loss, parts = loss4(det, targets)
    assert parts["box"] == 0.0 and parts["class"] == 0.0
    expected_obj = (IMGSZ / 640) ** 2 * sum(
        b * F.softplus(p[..., 4]).mean().item() for b, p in zip((4.0, 1.0, 0.4), det, strict=True)
    )
    assert parts["obj"] == pytest.approx(expected_obj, rel=1e-5)
    assert loss.item() == pytest.approx(2 * expected_obj, rel=1e-5)


@pytest.mark.parametrize(
    "cx,cy,expected",
    [
        # gx 5.25 (left), gy 7.75 (down)
        (42, 62, [(0, 0, 7, 5), (0, 0, 7, 4), (0, 0, 8, 5)]),
        # fractional parts exactly 0.5: no neighbour on either axis
        (44, 60, [(0, 0, 7, 5)]),
        # near 0.5: gx 5.49 -> left, gy 5.51 -> down
        (43.92, 44.08, [(0, 0, 5, 5), (0, 0, 5, 4), (0, 0, 6, 5)]),
        # image border: gx 0.25 (no left of column 0), gy 15.75 (no row 16)
        (2, 126, [(0, 0, 15, 0)]),
        # gx 0.75 -> right; gy 1.25 -> up onto row 0 (allowed, inside the image)
        (6, 10, [(0, 0, 1, 0), (0, 0, 0, 0), (0, 0, 1, 1)]),
        # last column, gx 15.25 -> left; gy 7.5 -> none
        (122, 60, [(0, 0, 7, 15), (0, 0, 7, 14)]),
        # gx 1.125 -> left onto column 0; gy exactly 0.5 -> none
        (9, 4, [(0, 0, 0, 1), (0, 0, 0, 0)]),
        # integer gx 6.0 (reference quirk): left (col 5) AND the 'right' offset rounds back onto
        # the own cell, which therefore appears twice; gy 7.25 -> up
        (48, 58, [(0, 0, 7, 6), (0, 0, 7, 5), (0, 0, 6, 6), (0, 0, 7, 6)]),
    ],
)
def test_neighbour_cells(loss4, cx, cy, expected):
    levels = loss4.build_targets(make_det(), px_targets([[0, 2, cx, cy, 8, 5]]))
    # order: own cell, left, up, right, down
    assert assigned(levels) == expected
    lt = levels[0]
    assert lt.tcls.tolist() == [2] * len(expected) and lt.b.tolist() == [0] * len(expected)
    gx, gy = cx / 8, cy / 8
    for k, (_, _, gj, gi) in enumerate(expected):
        torch.testing.assert_close(
            lt.tbox[k], torch.tensor([gx - gi, gy - gj, 1.0, 0.625]), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(lt.anchors[k], torch.tensor([1.25, 1.625]))


def test_assignment_over_levels_and_anchors(loss4):
    """A 16 x 16 px box centred at gx 5.5 (P3): P3 anchors 0, 1, 2 and P4 anchors 0, 1 match."""
    levels = loss4.build_targets(make_det(), px_targets([[0, 0, 44, 44, 16, 16]]))
    # P3: gx = gy = 5.5 -> own cell only
    # P4: gx = gy = 2.75 -> own (2, 2), right (2, 3), down (3, 2)
    assert assigned(levels) == [
        (0, 0, 5, 5),
        (0, 1, 5, 5),
        (0, 2, 5, 5),
        (1, 0, 2, 2),
        (1, 1, 2, 2),
        (1, 0, 2, 3),
        (1, 1, 2, 3),
        (1, 0, 3, 2),
        (1, 1, 3, 2),
    ]


def test_empty_targets(loss4):
    det = make_det(bs=2)
    levels = loss4.build_targets(det, torch.zeros(0, 6))
    assert assigned(levels) == []
    loss, parts = loss4(det, torch.zeros(0, 6))
    assert parts["box"] == 0.0 and parts["class"] == 0.0
    assert parts["obj"] == pytest.approx(0.04 * 5.4 * LN2, rel=1e-6)
    assert loss.item() == pytest.approx(2 * parts["obj"], rel=1e-6)


# --- loss values --------------------------------------------------------------------------------

RAW = [0.2, -0.3, 0.1, -0.2, 2.0, 0.5, -1.0, 0.0, 1.5]  # x y w h obj c0..c3 at the positive
BOX_A = [0, 1, 44, 60, 8, 5]  # class 1; gx 5.5, gy 7.5 -> own cell (7, 5) only
BOX_B = [0, 3, 44, 60, 7, 4.5]  # class 3, same cell and anchor (ratios 1.43 / 2.9)


def _expected_parts(order):
    """Independent computation of the three gained parts for BOX_A / BOX_B at one cell, bs 2."""
    r = torch.tensor(RAW)
    s = r.sigmoid()
    pbox = torch.tensor(
        [2 * s[0] - 0.5, 2 * s[1] - 0.5, (2 * s[2]) ** 2 * 1.25, (2 * s[3]) ** 2 * 1.625]
    )
    tb = {"A": torch.tensor([0.5, 0.5, 1.0, 0.625]), "B": torch.tensor([0.5, 0.5, 0.875, 0.5625])}
    ciou = {k: ciou_reference(pbox, v).item() for k, v in tb.items()}
    lbox = ((1 - ciou["A"]) + (1 - ciou["B"])) / 2
    t_last = max(ciou[order[-1]], 0.0)  # last write wins
    n0 = 2 * 3 * 16 * 16
    level0 = ((n0 - 1) * LN2 + F.softplus(r[4]).item() - r[4].item() * t_last) / n0
    lobj = 4.0 * level0 + 1.0 * LN2 + 0.4 * LN2
    c = r[5:]
    lcls = (2 * F.softplus(c).sum().item() - c[1].item() - c[3].item()) / 8
    return {"box": 0.05 * lbox, "obj": (128 / 640) ** 2 * lobj, "class": 0.5 * 4 / 80 * lcls}


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_two_boxes_in_one_cell_and_gains(loss4, order):
    det = make_det(bs=2)
    det[0][0, 0, 7, 5] = torch.tensor(RAW)
    rows = {"A": BOX_A, "B": BOX_B}
    targets = px_targets([rows[k] for k in order])
    levels = loss4.build_targets(det, targets)
    assert assigned(levels) == [(0, 0, 7, 5), (0, 0, 7, 5)]
    assert levels[0].tcls.tolist() == [rows[k][1] for k in order]
    loss, parts = loss4(det, targets)
    expected = _expected_parts(order)
    for k in ("box", "obj", "class"):
        assert parts[k] == pytest.approx(expected[k], rel=1e-5), k
    assert loss.item() == pytest.approx(2 * sum(expected.values()), rel=1e-5)
    # the two orders really differ (CIoU of A != CIoU of B)
    other = _expected_parts(order[::-1])
    assert abs(other["obj"] - expected["obj"]) > 1e-6


def test_gain_rescaling_and_hyp():
    d = Detect(4, (4, 4, 4))
    base = YoloLoss(d, 640)
    assert base.box_gain == pytest.approx(0.05)
    assert base.obj_gain == pytest.approx(1.0)
    assert base.cls_gain == pytest.approx(0.5 * 4 / 80)
    small = YoloLoss(d, 320, {"box": 0.1, "obj": 2.0, "cls": 1.0, "lr0": 0.01})
    assert small.box_gain == pytest.approx(0.1)
    assert small.obj_gain == pytest.approx(2.0 * 0.25)
    assert small.cls_gain == pytest.approx(1.0 * 4 / 80)
    assert YoloLoss(Detect(80, (4, 4, 4)), 640).cls_gain == pytest.approx(0.5)


def test_single_class_has_no_class_loss():
    loss1 = YoloLoss(Detect(1, (4, 4, 4)), IMGSZ)
    det = make_det(nc=1, fill=0.3)
    loss, parts = loss1(det, px_targets([[0, 0, 44, 60, 8, 5]]))
    assert parts["class"] == 0.0 and parts["box"] > 0


def test_backward_through_model():
    torch.manual_seed(0)
    model = MultiTaskYolo("n", 4, 3)
    out = model(torch.rand(2, 3, 64, 64))
    loss_fn = YoloLoss(model.detect, 64)
    targets = px_targets([[0, 1, 32, 30, 20, 24], [1, 0, 10, 50, 12, 16]], imgsz=64)
    loss, parts = loss_fn(out.det, targets)
    assert set(parts) == {"box", "obj", "class"} and all(
        isinstance(v, float) for v in parts.values()
    )
    loss.backward()
    w = model.last_shared_weight
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# --- CIoU and helpers ---------------------------------------------------------------------------


def test_ciou_matches_torchvision_and_formula():
    torch.manual_seed(0)
    b1 = torch.cat((torch.rand(50, 2) * 4, torch.rand(50, 2) * 3 + 0.05), 1)
    b2 = torch.cat((torch.rand(50, 2) * 4, torch.rand(50, 2) * 3 + 0.05), 1)
    ours = ciou_xywh(b1, b2)
    tv = complete_box_iou(box_convert(b1, "cxcywh", "xyxy"), box_convert(b2, "cxcywh", "xyxy"))
    torch.testing.assert_close(ours, tv.diagonal(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, ciou_reference(b1, b2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ciou_xywh(b1, b1), torch.ones(50), rtol=0, atol=1e-5)  # eps


def test_last_write_wins_is_serial_order():
    torch.manual_seed(0)
    n = 200
    b, a = torch.randint(0, 2, (n,)), torch.randint(0, 3, (n,))
    gj, gi = torch.randint(0, 3, (n,)), torch.randint(0, 3, (n,))
    iou = torch.rand(n)
    lt = type("LT", (), {"b": b, "a": a, "gj": gj, "gi": gi})()
    tobj = torch.zeros(2, 3, 3, 3)
    _write_last_wins(tobj, lt, iou)
    ref = torch.zeros(2, 3, 3, 3)
    for k in range(n):
        ref[b[k], a[k], gj[k], gi[k]] = iou[k]
    assert tobj.equal(ref)


# --- view loss ----------------------------------------------------------------------------------


def test_view_loss_ignores_missing():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    views = torch.tensor([0, -1, 2, -1])
    expected = F.cross_entropy(logits[[0, 2]], views[[0, 2]])
    torch.testing.assert_close(view_loss(logits, views), expected)


def test_view_loss_all_missing_is_connected_zero():
    logits = torch.randn(3, 3, requires_grad=True)
    loss = view_loss(logits, torch.tensor([-1, -1, -1]))
    assert loss.item() == 0.0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_ciou_gradient_stays_finite_for_a_box_thinner_than_float_spacing():
    """A predicted box whose height is below the float32 spacing of its coordinates: recomputed
    from its corners (torchvision, xyxy) the height is 0 and the gradient NaN; ours is finite."""
    pred = torch.tensor([[0.7, 0.9, 1.3, 1e-12]], requires_grad=True)
    target = torch.tensor([[0.6, 0.8, 1.0, 2.0]])
    ciou_xywh(pred, target).sum().backward()
    assert torch.isfinite(pred.grad).all()
    corners = box_convert(pred.detach(), "cxcywh", "xyxy").requires_grad_(True)
    complete_box_iou(corners, box_convert(target, "cxcywh", "xyxy")).sum().backward()
    assert not torch.isfinite(corners.grad).all()  # the failure this guards against
    zero = torch.tensor([[0.7, 0.9, 1.3, 0.0]], requires_grad=True)  # a sigmoid that underflowed
    ciou_xywh(zero, target).sum().backward()
    assert torch.isfinite(zero.grad).all()
