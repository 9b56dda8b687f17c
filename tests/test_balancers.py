"""Fixed, uncertainty and torchjd balancers, diagnostics and the factory, on a toy two-task model
(plus one small check on the real multi-task YOLOv5, that it meets the same contract)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchjd import aggregation as agg

from echomtl.balancing import (
    FixedWeights,
    GradNorm,
    JacobianAggregation,
    UncertaintyWeighting,
    available_aggregators,
    gradient_similarity,
    known_methods,
    make_balancer,
    trunk_diagnostics,
)
from echomtl.balancing.jd import PCGrad, features_are_nested
from echomtl.methods import METHODS

from .toy_mtl import ToyMTL, ToyOutput

TASKS = ("det", "cls")
W0 = {"det": 1.0, "cls": 0.01}
JD_METHODS = list(available_aggregators())
AGGREGATION = [name for name, m in METHODS.items() if m.kind == "aggregation"]


def make_model(variant: str = "multitask") -> ToyMTL:
    torch.manual_seed(0)
    return ToyMTL(variant).double()


def forward(model: ToyMTL, k: int = 0, bs: int = 4) -> tuple[ToyOutput, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(100 + k)
    x = torch.randn(bs, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(bs, 5, 6, 6, generator=g, dtype=torch.float64)
    v = torch.randint(0, 3, (bs,), generator=g)
    out = model(x)
    losses = {"det": ((out.det - y) ** 2).sum() / 10}
    if out.view_logits is not None:
        losses["cls"] = F.cross_entropy(out.view_logits, v)
    return out, losses


def task_grads(model: ToyMTL, params: list[Tensor], k: int = 0) -> dict[str, list[Tensor]]:
    """Independent per-task gradients on ``params`` (zeros where a task does not reach)."""
    _, losses = forward(model, k)
    res = {}
    for t in TASKS:
        gs = torch.autograd.grad(losses[t], params, retain_graph=True, allow_unused=True)
        res[t] = [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)]
    return res


def grads_of(model: nn.Module) -> list[Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_grads_close(a: list, b: list, rtol: float = 1e-12, atol: float = 1e-14) -> None:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
        else:
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def manual_grads(weights: dict[str, float], k: int = 0, variant: str = "multitask") -> list:
    model = make_model(variant)
    _, losses = forward(model, k)
    sum(weights[t] * losses[t] for t in losses).backward()
    return grads_of(model)


# ---- gradient_similarity / trunk_diagnostics -----------------------------------------------------
def test_gradient_similarity_hand_checked():
    t = torch.tensor
    n1, n2, c, g = gradient_similarity(t([1.0, 0.0]), t([0.0, 2.0]))  # orthogonal
    assert (n1, n2, c) == pytest.approx((1.0, 2.0, 0.0)) and g == pytest.approx(0.8)  # 2*2/5
    n1, n2, c, g = gradient_similarity(t([1.0, 2.0]), t([-1.0, -2.0]))  # opposite, same size
    assert c == pytest.approx(-1.0) and g == pytest.approx(1.0)
    _, _, c, g = gradient_similarity(t([3.0, 4.0]), t([0.3, 0.4]))  # same direction, 10x
    assert c == pytest.approx(1.0) and g == pytest.approx(2 * 5 * 0.5 / (25 + 0.25))
    pieces = gradient_similarity([t([1.0]), t([[2.0, 2.0]])], [t([0.0]), t([[1.0, -1.0]])])
    whole = gradient_similarity(t([1.0, 2.0, 2.0]), t([0.0, 1.0, -1.0]))
    assert pieces == pytest.approx(whole) and whole[2] == pytest.approx(0.0)
    n1, n2, c, g = gradient_similarity(t([0.0, 0.0]), t([1.0, 0.0]))
    assert n1 == 0 and math.isnan(c) and g == 0.0
    with pytest.raises(ValueError):
        gradient_similarity(t([1.0]), t([1.0, 2.0]))


def test_trunk_diagnostics_matches_independent_autograd_and_leaves_grad_alone():
    model = make_model()
    params = model.shared_parameters()
    fresh = make_model()
    ref = task_grads(fresh, fresh.shared_parameters())
    flat = {t: torch.cat([g.flatten() for g in ref[t]]) for t in TASKS}
    _, losses = forward(model)
    row = trunk_diagnostics(losses, params, W0)
    assert all(p.grad is None for p in model.parameters())
    nd, nc = flat["det"].norm().item(), flat["cls"].norm().item()
    assert row["scope"] == "trunk"
    assert row["norm_det"] == pytest.approx(nd, rel=1e-12)
    assert row["norm_cls"] == pytest.approx(nc, rel=1e-12)
    cos = (flat["det"] @ flat["cls"]).item() / (nd * nc)
    assert row["cosine"] == pytest.approx(cos, rel=1e-10)
    assert row["gms"] == pytest.approx(2 * nd * nc / (nd**2 + nc**2), rel=1e-12)
    assert (row["weight_det"], row["weight_cls"]) == (1.0, 0.01)
    sum(losses.values()).backward()  # the graph was retained for the balancer's own backward


# ---- fixed --------------------------------------------------------------------------------------
def test_fixed_equals_manual_weighted_backward_and_accumulates():
    model = make_model()
    bal = FixedWeights(W0)
    rec = bal.step(*reversed(forward(model, 0)), model, diagnostics_due=False)
    assert rec.weights == W0 and rec.diagnostics == []
    assert_grads_close(grads_of(model), manual_grads(W0, 0))
    bal.step(*reversed(forward(model, 1)), model, diagnostics_due=False)
    expected = [a + b for a, b in zip(manual_grads(W0, 0), manual_grads(W0, 1), strict=True)]
    assert_grads_close(grads_of(model), expected)


def test_fixed_diagnostics_rows():
    model = make_model()
    bal = FixedWeights(W0, cheap_diagnostics=True)
    out, losses = forward(model)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    assert [r["scope"] for r in rec.diagnostics] == ["W", "feature", "trunk"]
    assert_grads_close(grads_of(model), manual_grads(W0))
    fresh = make_model()
    ref = task_grads(fresh, [fresh.last.weight])
    row = rec.diagnostics[0]
    assert row["norm_det"] == pytest.approx(ref["det"][0].norm().item(), rel=1e-10)
    assert row["norm_cls"] == pytest.approx(ref["cls"][0].norm().item(), rel=1e-10)
    rec = FixedWeights(W0).step(*reversed(forward(model)), model, diagnostics_due=False)
    assert rec.diagnostics == []


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("fixed", {"weights": {"det": 1.0}}),
        ("uncertainty", {"initial_weights": {"det": 1.0}}),
        ("gradnorm", {"initial_weights": {"det": 1.0}, "alpha": 1.5, "lr": 0.1}),
        ("pcgrad", {"initial_weights": {"det": 1.0}}),
    ],
)
def test_det_only_model_is_a_plain_det_backward(method, kwargs):
    model = make_model("det_only")
    bal = make_balancer(method, **kwargs)
    rec = bal.step(*reversed(forward(model)), model, diagnostics_due=True)
    assert rec.diagnostics == [] and rec.weights == {"det": pytest.approx(1.0)}
    assert_grads_close(grads_of(model), manual_grads({"det": 1.0}, variant="det_only"))


@pytest.mark.parametrize("method", ["fixed", "gradnorm", "uncertainty", *JD_METHODS])
def test_dual_backbone_is_a_plain_weighted_backward(method):
    model = make_model("dual_backbone")
    kwargs = {"alpha": 1.5, "lr": 0.1} if method == "gradnorm" else {}
    bal = make_balancer(method, weights=W0, **kwargs)
    rec = bal.step(*reversed(forward(model)), model, diagnostics_due=True)
    assert rec.diagnostics == []
    assert rec.weights == pytest.approx(W0)
    expected = manual_grads(rec.weights, variant="dual_backbone")
    assert_grads_close(grads_of(model), expected)


# ---- uncertainty ---------------------------------------------------------------------------------
def test_uncertainty_loss_weights_and_log_variance_gradients():
    model = make_model()
    bal = UncertaintyWeighting(initial_log_vars={"det": 0.5, "cls": -0.2})
    (s,) = bal.extra_parameters()
    assert s is bal.log_vars and s.requires_grad
    out, losses = forward(model)
    values = {t: losses[t].item() for t in TASKS}
    rec = bal.step(losses, out, model, diagnostics_due=True)
    w = {"det": math.exp(-0.5), "cls": math.exp(0.2)}
    assert rec.weights == pytest.approx(w, rel=1e-6)
    assert [r["scope"] for r in rec.diagnostics] == ["trunk"]
    # d/ds_i [exp(-s_i) L_i + s_i] = 1 - exp(-s_i) L_i
    expected = [1 - w["det"] * values["det"], 1 - w["cls"] * values["cls"]]
    assert s.grad.tolist() == pytest.approx(expected, rel=1e-5)
    used = dict(zip(TASKS, torch.exp(-s.detach()).double().tolist(), strict=True))
    assert_grads_close(grads_of(model), manual_grads(used), rtol=1e-10, atol=1e-12)
    # accumulation: a second step adds to both the model's and s's gradients
    g1 = s.grad.clone()
    bal.step(*reversed(forward(model, 1)), model, diagnostics_due=False)
    assert not torch.equal(s.grad, g1)
    expected = [a + b for a, b in zip(manual_grads(used, 0), manual_grads(used, 1), strict=True)]
    assert_grads_close(grads_of(model), expected, rtol=1e-10, atol=1e-12)


def test_uncertainty_initialisation_and_state_round_trip():
    assert UncertaintyWeighting().weights == {"det": 1.0, "cls": 1.0}  # Kendall: s_i = 0
    bal = make_balancer("uncertainty", initial_weights=W0)  # the trainer's call
    assert bal.weights == pytest.approx(W0, rel=1e-6)
    assert bal.log_vars.tolist() == pytest.approx([0.0, math.log(100)], rel=1e-6)
    state = bal.state_dict()
    param = bal.log_vars
    with torch.no_grad():
        param.add_(1.0)
    bal.load_state_dict(state)
    assert bal.log_vars is param  # restored in place: the model optimizer still holds it
    assert bal.weights == pytest.approx(W0, rel=1e-6)
    with pytest.raises(ValueError):
        UncertaintyWeighting(initial_weights=W0, initial_log_vars={"det": 0.0})


# ---- torchjd ---------------------------------------------------------------------------------
def test_available_aggregators_are_reported():
    assert "pcgrad" in JD_METHODS
    assert set(JD_METHODS) <= set(AGGREGATION)
    for name in set(AGGREGATION) - set(JD_METHODS):
        with pytest.raises(ImportError, match="torchjd\\["):
            make_balancer(name, initial_weights=W0)


@pytest.mark.parametrize("variant", ["multitask", "aliased"])
@pytest.mark.parametrize("method", JD_METHODS)
def test_jd_methods_run_and_give_finite_grads_everywhere(method, variant):
    model = make_model(variant)
    bal = make_balancer(method, initial_weights=W0)  # the trainer's call
    assert isinstance(bal, JacobianAggregation) and bal.weights == W0
    rec = bal.step(*reversed(forward(model)), model, diagnostics_due=False)
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert not hasattr(p, "jac")
    assert any(p.grad.abs().sum() > 0 for p in model.shared_parameters())
    assert set(rec.info) == {"agg_weight_det", "agg_weight_cls"}
    # task-specific parameters get w_i * dL_i/dtheta, whatever the aggregator
    ref = manual_grads(W0, variant=variant)
    names = [n for n, _ in model.named_parameters()]
    for name, got, exp in zip(names, grads_of(model), ref, strict=True):
        if name.startswith(("det_head", "cls_head")):
            torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", ["multitask", "aliased"])
def test_pcgrad_shared_gradient_matches_aggregated_jacobian_and_accumulates(variant):
    """Both paths: nested features (full Jacobian) and non-nested ones (mtl_backward)."""
    model = make_model(variant)
    params = model.shared_parameters()
    fresh = make_model(variant)
    ref = task_grads(fresh, fresh.shared_parameters())
    jac = torch.stack([torch.cat([W0[t] * g.flatten() for g in ref[t]]) for t in TASKS])
    expected = agg.PCGrad()(jac)
    bal = PCGrad(task_weights=W0)
    out, losses = forward(model)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    got = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)
    assert [r["scope"] for r in rec.diagnostics] == ["W", "trunk"]  # from the Jacobian rows
    fresh = make_model(variant)
    exp_w = trunk_diagnostics(forward(fresh)[1], [fresh.last_shared_weight], W0)
    for key in ("norm_det", "norm_cls", "cosine", "gms"):
        assert rec.diagnostics[0][key] == pytest.approx(exp_w[key], rel=1e-10), key
    fresh = make_model(variant)
    exp_row = trunk_diagnostics(forward(fresh)[1], fresh.shared_parameters(), W0)
    row = rec.diagnostics[1]
    for key in ("norm_det", "norm_cls", "cosine", "gms", "weight_det", "weight_cls"):
        assert row[key] == pytest.approx(exp_row[key], rel=1e-10), key
    bal.step(*reversed(forward(model)), model, diagnostics_due=False)  # same batch again: x2
    got2 = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got2, 2 * expected, rtol=1e-10, atol=1e-13)
    ref_heads = [2 * g for g in manual_grads(W0, variant=variant)]
    for (name, p), exp in zip(model.named_parameters(), ref_heads, strict=True):
        if name.startswith(("det_head", "cls_head")):
            torch.testing.assert_close(p.grad, exp, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", ["multitask", "aliased"])
@pytest.mark.parametrize("method", ["pcgrad", "imtl_g"])
def test_jacobian_rows_one_by_one_give_the_gradients_of_both_at_once(method, variant):
    """The trainer's CPU setting (parallel_chunk_size=1) changes the speed, not the step."""
    results = []
    for chunk in (None, 1):
        torch.manual_seed(0)  # PCGrad draws its projection order from the global RNG
        model = make_model(variant)
        bal = make_balancer(method, initial_weights=W0, parallel_chunk_size=chunk)
        rec = bal.step(*reversed(forward(model)), model, diagnostics_due=True)
        results.append((grads_of(model), rec))
    (grads_vmap, rec_vmap), (grads_rows, rec_rows) = results
    assert_grads_close(grads_rows, grads_vmap, rtol=1e-12, atol=1e-14)
    assert rec_rows.info == pytest.approx(rec_vmap.info, rel=1e-12)
    for a, b in zip(rec_rows.diagnostics, rec_vmap.diagnostics, strict=True):
        assert a["cosine"] == pytest.approx(b["cosine"], rel=1e-12)


def test_nested_features_are_detected():
    """mtl_backward double-counts nested features; the balancer must notice them."""
    out, _ = forward(make_model("multitask"))
    assert features_are_nested(out.shared_features)  # f is computed from e
    out, _ = forward(make_model("aliased"))
    assert not features_are_nested(out.shared_features)


def test_jd_keeps_det_only_features():
    """The stem output e feeds only detection: its parameters still get the det gradient."""
    model = make_model()
    PCGrad(task_weights=W0).step(*reversed(forward(model)), model, diagnostics_due=False)
    assert all(p.grad.abs().sum() > 0 for p in model.stem.parameters())


# ---- factory -----------------------------------------------------------------------------------
def test_make_balancer_names_and_errors():
    assert isinstance(make_balancer("fixed", weights=W0), FixedWeights)
    assert isinstance(make_balancer("fixed", w=W0), FixedWeights)
    gn = make_balancer("gradnorm", weights=W0, alpha=1.0, lr=0.01, optimizer="sgd")
    assert isinstance(gn, GradNorm)
    assert isinstance(make_balancer("uncertainty"), UncertaintyWeighting)
    with pytest.raises(ValueError, match="unknown balancing method 'nope'.*gradnorm"):
        make_balancer("nope")
    with pytest.raises(TypeError, match="twice"):
        make_balancer("fixed", weights=W0, w=W0)
    assert {"fixed", "gradnorm", "uncertainty", "pcgrad", "upgrad"} <= set(known_methods())


# ---- the real model (small) ---------------------------------------------------------------------
def _real_model():
    multitask = pytest.importorskip("echomtl.models.multitask")
    losses_mod = pytest.importorskip("echomtl.losses")
    torch.manual_seed(0)
    model = multitask.build_model("multitask", "n", nc=4, n_views=3, attach=9, dropout=0.0)
    model.train()
    imgsz, bs = 64, 2
    g = torch.Generator().manual_seed(0)
    images = torch.rand(bs, 3, imgsz, imgsz, generator=g)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.2], [1, 2, 0.4, 0.6, 0.2, 0.4]])
    views = torch.tensor([0, 2])
    crit = losses_mod.YoloLoss(model.detect, imgsz)

    def run():
        out = model(images)
        det, _ = crit(out.det, targets)
        return out, {"det": det, "cls": losses_mod.view_loss(out.view_logits, views)}

    return model, run


def test_real_model_gradnorm_hooks_match_per_task_autograd():
    model, run = _real_model()
    w = model.last_shared_weight
    out, losses = run()
    ref = {t: torch.autograd.grad(losses[t], w, retain_graph=True)[0] for t in TASKS}
    model.zero_grad(set_to_none=True)
    out, losses = run()
    rec = GradNorm(W0, alpha=1.5, lr=0.025).step(losses, out, model, diagnostics_due=False)
    row = rec.diagnostics[0]
    assert row["norm_det"] == pytest.approx(ref["det"].norm().item(), rel=1e-4)
    assert row["norm_cls"] == pytest.approx(ref["cls"].norm().item(), rel=1e-4)
    expected = W0["det"] * ref["det"] + W0["cls"] * ref["cls"]
    torch.testing.assert_close(w.grad, expected, rtol=1e-4, atol=1e-7)


def test_real_model_pcgrad_runs():
    model, run = _real_model()
    out, losses = run()
    PCGrad(task_weights=W0).step(losses, out, model, diagnostics_due=True)
    shared = model.shared_parameters()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in shared)
    assert all(p.grad is not None for p in model.head.parameters())


def test_two_task_behaviour_of_the_aggregators():
    """For two conflicting tasks UPGrad is PCGrad at half the step (so it is not run), while the
    aggregators the study keeps give updates of their own (docs/methods.md)."""
    g = torch.Generator().manual_seed(0)
    g1 = torch.randn(50, generator=g, dtype=torch.float64)
    g2 = -0.3 * g1 + 0.5 * torch.randn(50, generator=g, dtype=torch.float64)
    jac = torch.stack([g1, g2])
    assert F.cosine_similarity(g1, g2, 0) < -0.3
    pc = agg.PCGrad()(jac)
    up = agg.UPGrad()(jac)
    assert ((up - pc / 2).norm() / (pc / 2).norm()).item() < 1e-3
    for kept in (agg.IMTLG(), agg.MGDA(), agg.AlignedMTL()):
        v = kept(jac)
        assert ((v - pc / 2).norm() / (pc / 2).norm()).item() > 0.3, type(kept).__name__
        assert ((v - pc).norm() / pc.norm()).item() > 0.3, type(kept).__name__
