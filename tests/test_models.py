"""Models: exact YOLOv5 v7.0 sizes, the multitask split, the comparison models, Detect/decode."""

import math

import pytest
import torch
from torch import nn

from echomtl.models.blocks import C3, SPPF, Conv
from echomtl.models.multitask import (
    ClassificationHead,
    DetOnlyYolo,
    DualBackboneYolo,
    ModelOutput,
    MultiTaskYolo,
    ViewOnlyYolo,
    build_model,
    count_parameters,
)
from echomtl.models.yolo import LAYERS, SCALES, Detect, YoloV5

IMG = 64


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "scale,nc,expected",
    [
        ("n", 4, 1_769_329),
        ("s", 4, 7_030_417),
        ("m", 4, 20_883_441),
        ("n", 80, 1_872_157),
        ("s", 80, 7_235_389),
        ("m", 80, 21_190_557),
    ],
)
def test_parameter_counts_match_reference(scale, nc, expected):
    assert count_parameters(YoloV5(scale, nc)) == expected


def test_scales_and_table():
    assert SCALES == {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75)}
    assert len(LAYERS) == 25
    m = YoloV5("m", 4)
    # depth: C3 repeats 3/6/9 -> 2/4/6 at m; width: 64 * 0.75 = 48
    assert len(m.model[2].m) == 2 and len(m.model[4].m) == 4 and len(m.model[6].m) == 6
    assert m.model[0].conv.out_channels == 48
    assert m.model[0].conv.kernel_size == (6, 6) and m.model[0].conv.padding == (2, 2)
    bn = m.model[0].bn
    assert bn.eps == 1e-3 and bn.momentum == 0.03
    assert isinstance(m.model[0].act, nn.SiLU) and m.model[0].conv.bias is None
    assert not m.model[13].m[0].add and m.model[2].m[0].add  # shortcut False in the head


def _check_det_shapes(det, bs=2, nc=4, img=IMG):
    assert len(det) == 3
    for p, s in zip(det, (8, 16, 32), strict=True):
        assert p.shape == (bs, 3, img // s, img // s, 5 + nc)


@pytest.mark.parametrize("variant", ["multitask", "det_only", "dual_backbone"])
def test_output_shapes(variant):
    model = build_model(variant, "n", nc=4, n_views=3)
    out = model(torch.rand(2, 3, IMG, IMG))
    assert isinstance(out, ModelOutput)
    _check_det_shapes(out.det)
    if variant == "det_only":
        assert out.view_logits is None
    else:
        assert out.view_logits.shape == (2, 3)
    if variant == "multitask":
        assert [f.shape[1] for f in out.shared_features] == [64, 128, 256]
        assert set(out.task_features) == {"det", "cls"}
    else:
        assert out.shared_features == [] and out.task_features == {}
    dec = model.decode(out.det)
    assert dec.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 9)


def test_multitask_aliases_and_shared_features():
    model = MultiTaskYolo("n", 4, 3).eval()
    captured = {}
    for i in (4, 6, 9):
        model.detector.model[i].register_forward_hook(
            lambda _m, _i, o, i=i: captured.__setitem__(i, o)
        )
    out = model(torch.rand(2, 3, IMG, IMG))
    assert model.shared_indices == [4, 6, 9]
    assert len(out.shared_features) == 3
    for f, i in zip(out.shared_features, (4, 6, 9), strict=True):
        assert f is captured[i]
    f = out.shared_features[-1]
    a, b = out.task_features["det"], out.task_features["cls"]
    assert a is not b and a is not f and b is not f
    assert a.data_ptr() == b.data_ptr() == f.data_ptr()
    assert a._base is f and b._base is f
    # the head reads the cls alias: same logits as running the head on f
    torch.testing.assert_close(out.view_logits, model.head(f))


def _grad_or_zero(y, x):
    (g,) = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@pytest.mark.parametrize("attach", [9, 8, 6, 5, 4, 3, 0])
def test_attach_split_routes_gradients(attach):
    """Every det-branch read of the attach output goes through the det alias (skips included)."""
    model = MultiTaskYolo("n", 4, 3, attach=attach).train()
    out = model(torch.rand(2, 3, IMG, IMG))
    _check_det_shapes(out.det)
    f = out.shared_features[-1]
    a, b = out.task_features["det"], out.task_features["cls"]
    det_sum = sum(p.sum() for p in out.det)
    cls_sum = out.view_logits.sum()
    g_total = _grad_or_zero(det_sum, f)
    torch.testing.assert_close(_grad_or_zero(det_sum, a), g_total)
    assert torch.count_nonzero(g_total) > 0
    assert torch.count_nonzero(_grad_or_zero(det_sum, b)) == 0
    torch.testing.assert_close(_grad_or_zero(cls_sum, b), _grad_or_zero(cls_sum, f))
    assert torch.count_nonzero(_grad_or_zero(cls_sum, a)) == 0
    # shared features are exactly the trunk outputs the detection branch reads
    expected = sorted(
        {j for i in range(attach + 1, len(LAYERS)) for j in model.detector.sources[i]}
        & set(range(attach + 1))
    )
    assert model.shared_indices == expected and expected[-1] == attach
    assert len(out.shared_features) == len(expected)


@pytest.mark.parametrize(
    "attach,indices", [(9, [4, 6, 9]), (8, [4, 6, 8]), (6, [4, 6]), (5, [4, 5]), (4, [4]), (0, [0])]
)
def test_shared_indices(attach, indices):
    assert MultiTaskYolo("n", 4, 3, attach=attach).shared_indices == indices


@pytest.mark.parametrize("attach,kind", [(9, SPPF), (8, C3), (7, Conv), (0, Conv)])
def test_parameter_groups_and_last_shared_weight(attach, kind):
    model = MultiTaskYolo("n", 4, 3, attach=attach)
    layer = model.detector.model[attach]
    assert isinstance(layer, kind)
    w = model.last_shared_weight
    if kind is SPPF:
        assert w is layer.cv2.conv.weight
    elif kind is C3:
        assert w is layer.cv3.conv.weight
    else:
        assert w is layer.conv.weight
    shared = model.shared_parameters()
    assert any(p is w for p in shared)
    det, cls = model.task_parameters("det"), model.task_parameters("cls")
    ids = [id(p) for p in shared + det + cls]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert cls == list(model.head.parameters())
    assert model.detect is model.detector.model[-1]
    with pytest.raises(ValueError, match="unknown task"):
        model.task_parameters("seg")


def test_det_only_interface():
    model = DetOnlyYolo("n", 4)
    assert model.shared_parameters() == [] and model.last_shared_weight is None
    assert count_parameters(model) == 1_769_329
    assert model.task_parameters("cls") == []
    assert len(model.task_parameters("det")) == len(list(model.parameters()))
    assert isinstance(model.detect, Detect)


def test_view_only_is_the_dual_backbones_classifier_alone():
    """The single-task view baseline: the dual backbone's classifier, no detector, no sharing."""
    model = ViewOnlyYolo("n", 4, 3)
    dual = DualBackboneYolo("n", 4, 3)
    assert [tuple(p.shape) for p in model.parameters()] == [
        tuple(p.shape) for p in (*dual.backbone.parameters(), *dual.head.parameters())
    ]
    out = model(torch.rand(2, 3, IMG, IMG))
    assert out.det == [] and out.view_logits.shape == (2, 3)
    assert model.shared_parameters() == [] and model.last_shared_weight is None
    assert model.task_parameters("det") == []
    assert len(model.task_parameters("cls")) == len(list(model.parameters()))
    assert not hasattr(model, "detect")


def test_dual_backbone_shares_nothing(capsys):
    model = DualBackboneYolo("n", 4, 3)
    det_ptrs = {p.data_ptr() for p in model.detector.parameters()}
    cls_params = list(model.backbone.parameters()) + list(model.head.parameters())
    cls_ptrs = {p.data_ptr() for p in cls_params}
    assert det_ptrs.isdisjoint(cls_ptrs)
    assert model.shared_parameters() == [] and model.last_shared_weight is None
    counts = model.parameter_counts()
    assert counts["detector"] == 1_769_329
    assert counts["classifier"] == count_parameters(model) - counts["detector"]
    # classifier = backbone layers 0..9 of the same scale + head (256 -> 3)
    backbone_n = sum(count_parameters(m) for m in YoloV5("n", 4).model[:10])
    assert counts["classifier"] == backbone_n + 256 * 3 + 3
    with capsys.disabled():
        print(f"\ndual_backbone n nc=4: {counts} total {count_parameters(model)}")
    # view logits depend on the second backbone only
    out = model(torch.rand(2, 3, IMG, IMG))
    grads = torch.autograd.grad(
        out.view_logits.sum(), list(model.detector.parameters()), allow_unused=True
    )
    assert all(g is None for g in grads)


def test_build_model_errors():
    with pytest.raises(ValueError, match="unknown model variant 'mtl'"):
        build_model("mtl", "n", 4, 3)
    with pytest.raises(ValueError, match="unknown scale"):
        build_model("multitask", "x", 4, 3)
    with pytest.raises(ValueError, match="attach"):
        build_model("multitask", "n", 4, 3, attach=10)


def test_classification_head():
    head = ClassificationHead(8, 3, dropout=0.5).eval()
    x = torch.rand(2, 8, 4, 4)
    torch.testing.assert_close(head(x), head.linear(x.mean((2, 3))))


def test_detect_bias_init():
    nc, ch = 4, (16, 32, 64)
    torch.manual_seed(123)
    d = Detect(nc, ch)
    torch.manual_seed(123)
    plain = [nn.Conv2d(c, 3 * (nc + 5), 1) for c in ch]
    for conv, ref, s in zip(d.m, plain, (8, 16, 32), strict=True):
        torch.testing.assert_close(conv.weight, ref.weight)
        delta = (conv.bias - ref.bias).detach().view(3, nc + 5)
        expected = torch.zeros(3, nc + 5)
        expected[:, 4] = math.log(8 / (640 / s) ** 2)
        expected[:, 5:] = math.log(0.6 / (nc - 0.99999))
        torch.testing.assert_close(delta, expected)
    torch.testing.assert_close(d.anchors[0], torch.tensor([[10.0, 13], [16, 30], [33, 23]]))
    torch.testing.assert_close(d.anchors[2], torch.tensor([[116.0, 90], [156, 198], [373, 326]]))
    assert d.stride.tolist() == [8, 16, 32] and (d.nl, d.na, d.no) == (3, 3, 9)
    assert {"anchors", "stride"} <= set(dict(d.named_buffers()))


def test_decode_hand_constructed():
    nc = 2
    d = Detect(nc, (4, 4, 4))
    det = [torch.zeros(1, 3, n, n, 5 + nc) for n in (2, 1, 1)]
    logit = math.log(0.75 / 0.25)  # sigmoid -> 0.75
    # level 0, anchor 1, row 1, col 0
    det[0][0, 1, 1, 0] = torch.tensor([logit, 0.0, 0.0, logit, logit, 0.0, logit])
    out = d.decode(det)
    assert out.shape == (1, 3 * 4 + 3 + 3, 5 + nc)
    row = out[0, 1 * 4 + 1 * 2 + 0]  # anchor-major, then row, then column
    # x = (2*0.75 - 0.5 + 0) * 8 = 8; y = (2*0.5 - 0.5 + 1) * 8 = 12
    # w = (2*0.5)^2 * 16 = 16; h = (2*0.75)^2 * 30 = 67.5
    torch.testing.assert_close(row, torch.tensor([8.0, 12.0, 16.0, 67.5, 0.75, 0.5, 0.75]))
    # a zero logit at level 2 anchor 2: centre of the cell, wh = anchor
    torch.testing.assert_close(out[0, -1, :4], torch.tensor([16.0, 16.0, 373.0, 326.0]))
    # the grid cache is reused for the same shapes
    assert d.decode(det).equal(out)
