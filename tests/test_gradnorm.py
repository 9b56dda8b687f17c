"""GradNorm against an independent recomputation with plain autograd on a toy two-task model.

Every quantity (g_i on W by a full per-task backward, G_i, r_i, targets, the weight gradient, the
SGD update, clamp + renormalisation) is recomputed here from scratch and compared with what the
balancer did and logged. float64 throughout, so comparisons are tight.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from echomtl.balancing import GradNorm, make_balancer, trunk_diagnostics

from .toy_mtl import ToyMTL, ToyOutput

TASKS = ("det", "cls")


def make_model(variant: str = "multitask", seed: int = 0) -> ToyMTL:
    torch.manual_seed(seed)
    return ToyMTL(variant).double()


def make_batch(k: int, bs: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(100 + k)
    x = torch.randn(bs, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(bs, 5, 6, 6, generator=g, dtype=torch.float64)
    v = torch.randint(0, 3, (bs,), generator=g)
    return x, y, v


def compute_losses(out: ToyOutput, y: Tensor, v: Tensor) -> dict[str, Tensor]:
    # det: summed (large, like YOLOv5's batch-scaled loss); cls: mean cross-entropy.
    losses = {"det": ((out.det - y) ** 2).sum() / 10}
    if out.view_logits is not None:
        losses["cls"] = F.cross_entropy(out.view_logits, v)
    return losses


def forward(model: ToyMTL, k: int) -> tuple[ToyOutput, dict[str, Tensor]]:
    x, y, v = make_batch(k)
    out = model(x)
    return out, compute_losses(out, y, v)


def reference(model: ToyMTL, k: int) -> dict:
    """Per-task quantities by full, independent backwards (no hooks, no balancer)."""
    out, losses = forward(model, k)
    w = model.last_shared_weight
    ref = {"loss": {t: losses[t].item() for t in TASKS}}
    for t in TASKS:
        (ref[f"g_{t}"],) = torch.autograd.grad(losses[t], w, retain_graph=True)
        (ref[f"f_{t}"],) = torch.autograd.grad(losses[t], out.task_features[t], retain_graph=True)
    return ref


def cos(a: Tensor, b: Tensor) -> float:
    return (a.flatten() @ b.flatten() / (a.norm() * b.norm())).item()


def gms(a: Tensor, b: Tensor) -> float:
    na, nb = a.norm().item(), b.norm().item()
    return 2 * na * nb / (na**2 + nb**2)


def expected_update(w, norms, losses, l0, alpha, lr, min_weight, s0):
    """GradNorm by the spec, step by step, in plain Python."""
    n = len(w)
    G = [w[i] * norms[i] for i in range(n)]
    g_mean = sum(G) / n
    lt = [losses[i] / l0[i] for i in range(n)]
    r = [x / (sum(lt) / n) for x in lt]
    targets = [g_mean * ri**alpha for ri in r]
    grad = [math.copysign(1.0, G[i] - targets[i]) * norms[i] for i in range(n)]
    new = [w[i] - lr * grad[i] for i in range(n)]  # SGD
    new = [max(x, min_weight) for x in new]  # clamp
    new = [x * s0 / sum(new) for x in new]  # renormalise
    l_grad = sum(abs(G[i] - targets[i]) for i in range(n))
    return {"G": G, "r": r, "targets": targets, "grad": grad, "new": new, "L_grad": l_grad}


# ---- tests -------------------------------------------------------------------------------------
def test_every_quantity_and_sgd_update_over_five_steps():
    model = make_model()
    init = {"det": 1.0, "cls": 0.5}
    alpha, window, min_weight = 1.5, 2, 1e-4
    ref0 = reference(model, 0)
    n0 = [ref0["g_det"].norm().item(), ref0["g_cls"].norm().item()]
    lr = 0.02 / max(n0)  # moves weights by ~2% of the sum per step: no clamping here
    bal = GradNorm(init, alpha=alpha, lr=lr, optimizer="sgd", l0_window=window)
    w = [init["det"], init["cls"]]
    loss_hist = []
    for k in range(5):
        ref = reference(model, k)
        out, losses = forward(model, k)
        rec = bal.step(losses, out, model, diagnostics_due=False)
        norms = [ref["g_det"].norm().item(), ref["g_cls"].norm().item()]
        loss_hist.append([ref["loss"]["det"], ref["loss"]["cls"]])
        assert rec.weights == pytest.approx(dict(zip(TASKS, w, strict=True)), abs=1e-15)
        row_w = next(r for r in rec.diagnostics if r["scope"] == "W")
        row_f = next(r for r in rec.diagnostics if r["scope"] == "feature")
        assert [row_w["norm_det"], row_w["norm_cls"]] == pytest.approx(norms, rel=1e-10)
        assert row_w["cosine"] == pytest.approx(cos(ref["g_det"], ref["g_cls"]), abs=1e-10)
        assert row_w["gms"] == pytest.approx(gms(ref["g_det"], ref["g_cls"]), rel=1e-10)
        assert row_f["norm_det"] == pytest.approx(ref["f_det"].norm().item(), rel=1e-10)
        assert row_f["norm_cls"] == pytest.approx(ref["f_cls"].norm().item(), rel=1e-10)
        assert row_f["cosine"] == pytest.approx(cos(ref["f_det"], ref["f_cls"]), abs=1e-10)
        assert row_f["gms"] == pytest.approx(gms(ref["f_det"], ref["f_cls"]), rel=1e-10)
        assert (row_w["weight_det"], row_w["weight_cls"]) == pytest.approx(tuple(w), abs=1e-15)
        G = [w[0] * norms[0], w[1] * norms[1]]
        assert [row_w["G_det"], row_w["G_cls"]] == pytest.approx(G, rel=1e-10)
        if k < window - 1:  # L(0) unknown: no update
            assert math.isnan(row_w["L_grad"]) and math.isnan(row_w["target_det"])
            assert bal.weights == pytest.approx(dict(zip(TASKS, w, strict=True)), abs=1e-15)
            continue
        l0 = [sum(h[i] for h in loss_hist[:window]) / window for i in range(2)]
        exp = expected_update(w, norms, loss_hist[-1], l0, alpha, lr, min_weight, 1.5)
        assert [row_w["r_det"], row_w["r_cls"]] == pytest.approx(exp["r"], rel=1e-10)
        assert [row_w["target_det"], row_w["target_cls"]] == pytest.approx(
            exp["targets"], rel=1e-10
        )
        assert row_w["L_grad"] == pytest.approx(exp["L_grad"], rel=1e-9)
        assert max(w[i] - lr * exp["grad"][i] for i in range(2)) > min_weight  # no clamp here
        now = bal.weights
        assert [now["det"], now["cls"]] == pytest.approx(exp["new"], abs=1e-12)
        assert sum(now.values()) == pytest.approx(1.5, abs=1e-14)
        w = exp["new"]
    assert bal.l0 == pytest.approx(
        {t: sum(h[i] for h in loss_hist[:window]) / window for i, t in enumerate(TASKS)}
    )


def test_model_grad_is_exactly_the_weighted_loss_gradient():
    """L_grad never reaches the model: .grad == d(sum_i w_i L_i)/dtheta with pre-update w."""
    model = make_model()
    ref_model = copy.deepcopy(model)
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.1, optimizer="sgd")
    before = bal.weights
    out, losses = forward(model, 0)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    assert rec.weights == before
    assert bal.weights != before  # an update did happen (l0_window=1)
    out_r, losses_r = forward(ref_model, 0)
    (before["det"] * losses_r["det"] + before["cls"] * losses_r["cls"]).backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=name)
    # the balancer's weights have their own gradient store, never the model's
    assert all(p is not bal._w for p in model.parameters())


def test_accumulates_into_grad_over_micro_batches():
    model = make_model()
    ref_model = copy.deepcopy(model)
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.0, lr=0.05, optimizer="adam")
    used = []
    for k in range(2):
        out, losses = forward(model, k)
        used.append(bal.step(losses, out, model, diagnostics_due=False).weights)
    for k in range(2):
        out, losses = forward(ref_model, k)
        (used[k]["det"] * losses["det"] + used[k]["cls"] * losses["cls"]).backward()
    assert used[0] != used[1]
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


def test_weights_stay_positive_clamp_then_renormalise():
    model = make_model()
    ref = reference(model, 0)
    norms = [ref["g_det"].norm().item(), ref["g_cls"].norm().item()]
    init = {"det": 1.0, "cls": 0.01}
    lr = 5.0 / min(norms)  # one SGD step would drive a weight far below zero
    min_weight = 1e-3
    bal = GradNorm(init, alpha=1.5, lr=lr, optimizer="sgd", min_weight=min_weight)
    out, losses = forward(model, 0)
    bal.step(losses, out, model, diagnostics_due=False)
    w = [1.0, 0.01]
    loss = [ref["loss"][t] for t in TASKS]
    exp = expected_update(w, norms, loss, loss, 1.5, lr, min_weight, 1.01)  # L(0) = L(t): r = 1
    raw = [w[i] - lr * exp["grad"][i] for i in range(2)]
    assert min(raw) < 0  # the case this test is about
    now = bal.weights
    assert [now["det"], now["cls"]] == pytest.approx(exp["new"], rel=1e-12)
    assert min(now.values()) > 0
    assert sum(now.values()) == pytest.approx(1.01, abs=1e-14)
    # several more violent steps: still positive, sum kept
    for k in range(1, 4):
        out, losses = forward(model, k)
        bal.step(losses, out, model, diagnostics_due=False)
        assert min(bal.weights.values()) > 0
        assert sum(bal.weights.values()) == pytest.approx(1.01, abs=1e-13)


@pytest.mark.parametrize(
    ("renormalise", "start", "total"),
    [("initial_sum", [1.0, 0.01], 1.01), ("task_count", [2 / 1.01, 0.02 / 1.01], 2.0)],
)
def test_renormalise_keeps_the_initial_sum_or_the_task_count(renormalise, start, total):
    """Chen et al. keep sum_i w_i = T (the number of tasks); the seed's own choice keeps the
    initial sum, 1.01, which lowers w_det below the fixed-weight runs' 1.0 whenever w_cls grows.
    Under ``task_count`` the initial weights are scaled to T with their ratio kept, and each
    update is the reference update of :func:`expected_update` with ``s0 = T``."""
    model = make_model()
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.05, optimizer="sgd",
                   renormalise=renormalise)  # fmt: skip
    assert [bal.weights["det"], bal.weights["cls"]] == pytest.approx(start, rel=1e-14)
    ref = reference(model, 0)
    norms = [ref["g_det"].norm().item(), ref["g_cls"].norm().item()]
    loss = [ref["loss"][t] for t in TASKS]
    out, losses = forward(model, 0)
    bal.step(losses, out, model, diagnostics_due=False)
    exp = expected_update(start, norms, loss, loss, 1.5, 0.05, 1e-4, total)
    assert [bal.weights["det"], bal.weights["cls"]] == pytest.approx(exp["new"], rel=1e-12)
    for k in range(1, 4):
        out, losses = forward(model, k)
        bal.step(losses, out, model, diagnostics_due=False)
        assert sum(bal.weights.values()) == pytest.approx(total, abs=1e-13)
    other = "task_count" if renormalise == "initial_sum" else "initial_sum"
    with pytest.raises(ValueError, match="renormalises to"):
        GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.05,
                 renormalise=other).load_state_dict(bal.state_dict())  # fmt: skip


def test_l0_window_is_averaged_then_frozen():
    model = make_model()
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.01, optimizer="sgd", l0_window=3)
    seen = []
    for k in range(5):
        out, losses = forward(model, k)
        seen.append({t: losses[t].item() for t in TASKS})
        before = bal.weights
        rec = bal.step(losses, out, model, diagnostics_due=False)
        row = rec.diagnostics[0]
        if k < 2:
            assert bal.l0 is None and bal.weights == before and math.isnan(row["L_grad"])
        else:
            assert bal.weights != before and math.isfinite(row["L_grad"])
        if k >= 2:
            expected = {t: sum(s[t] for s in seen[:3]) / 3 for t in TASKS}
            assert bal.l0 == pytest.approx(expected, rel=1e-14)  # not reset by later steps
            ratio = [seen[k][t] / expected[t] for t in TASKS]
            assert row["r_det"] == pytest.approx(ratio[0] / (sum(ratio) / 2), rel=1e-12)


def test_weight_optimizer_created_once_without_weight_decay():
    model = make_model()
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.025, optimizer="adam")
    opt = bal.optimizer
    assert isinstance(opt, torch.optim.Adam)
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)
    for k in range(3):
        out, losses = forward(model, k)
        bal.step(losses, out, model, diagnostics_due=False)
        assert bal.optimizer is opt
    assert int(opt.state[bal._w]["step"]) == 3  # the same Adam state advanced 3 times
    sgd = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.025, optimizer="sgd").optimizer
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["weight_decay"] == 0 and sgd.param_groups[0]["momentum"] == 0


@pytest.mark.parametrize("stop", [1, 4])  # inside the L(0) window, and after it
def test_state_dict_round_trip_resumes_identically(stop):
    model = make_model()
    kw = {"initial_weights": {"det": 1.0, "cls": 0.01}, "alpha": 1.5, "lr": 0.025}
    a = GradNorm(**kw, optimizer="adam", l0_window=3)
    for k in range(stop):
        out, losses = forward(model, k)
        a.step(losses, out, model, diagnostics_due=False)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = GradNorm(**kw, optimizer="adam", l0_window=3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.weights == a.weights
    for k in range(stop, stop + 3):
        out, losses = forward(model, k)
        ra = a.step(losses, out, model, diagnostics_due=False)
        out, losses = forward(model, k)
        rb = b.step(losses, out, model, diagnostics_due=False)
        assert ra.weights == rb.weights
        assert a.weights == b.weights
    assert a.l0 == b.l0


def test_trunk_row_when_due_matches_trunk_diagnostics():
    model = make_model()
    bal = GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.025)
    out, losses = forward(model, 0)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    assert [r["scope"] for r in rec.diagnostics] == ["W", "feature", "trunk"]
    out2, losses2 = forward(model, 0)
    expected = trunk_diagnostics(losses2, model.shared_parameters(), {"det": 1.0, "cls": 0.01})
    assert rec.diagnostics[2].pop("scope") == expected.pop("scope") == "trunk"
    assert rec.diagnostics[2] == pytest.approx(expected, rel=1e-10, nan_ok=True)
    for key in ("G_det", "G_cls", "target_det", "target_cls", "r_det", "r_cls", "L_grad"):
        assert key in rec.diagnostics[0] and key in rec.info
    out, losses = forward(model, 1)
    rec = bal.step(losses, out, model, diagnostics_due=False)
    assert [r["scope"] for r in rec.diagnostics] == ["W", "feature"]


@pytest.mark.parametrize("variant", ["det_only", "dual_backbone"])
def test_without_shared_trunk_is_a_plain_weighted_backward(variant):
    model = make_model(variant)
    ref_model = copy.deepcopy(model)
    weights = {"det": 1.0} if variant == "det_only" else {"det": 1.0, "cls": 0.01}
    bal = GradNorm(weights, alpha=1.5, lr=0.025)
    out, losses = forward(model, 0)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    assert rec.diagnostics == [] and bal.weights == weights
    _, losses_r = forward(ref_model, 0)
    sum(weights[t] * losses_r[t] for t in losses_r).backward()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


def test_arguments_are_checked_and_factory_builds_it():
    with pytest.raises(ValueError, match="> 0"):
        GradNorm({"det": 1.0, "cls": 0.0}, alpha=1.5, lr=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.1, optimizer="adamw")
    with pytest.raises(ValueError, match="l0_window"):
        GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.1, l0_window=0)
    with pytest.raises(ValueError, match="min_weight"):
        GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.1, min_weight=0.6)
    cfg = {"lr": 0.025, "optimizer": "adam", "l0_window": 10, "min_weight": 0.0001}
    bal = make_balancer("gradnorm", initial_weights={"det": 1.0, "cls": 0.01}, alpha=1.5, **cfg)
    assert isinstance(bal, GradNorm) and bal.l0_window == 10 and bal.weight_sum == 1.01
    with pytest.raises(ValueError, match="renormalise"):
        GradNorm({"det": 1.0, "cls": 0.01}, alpha=1.5, lr=0.1, renormalise="mean")
    assert bal.extra_parameters() == []
