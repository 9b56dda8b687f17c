"""What the interference diagnostics measure, and that the controls are isolated (issue 10).

Weighted norms and update shares against a direct autograd computation, the null reference on
cases with a known answer, the stop-gradient and dual-backbone controls against the detector
alone, every method's effective weights in steps.csv, and full batches only.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from echomtl.balancing import make_balancer
from echomtl.balancing.diagnostics import null_reference, update_shares
from echomtl.losses import YoloLoss, view_loss
from echomtl.models.multitask import build_model
from echomtl.training.trainer import INFO_COLUMNS, batch_order, half_batch_losses, train

from .test_balancers import TASKS, W0, forward, make_model
from .test_training import params, paths


def _flat(gs):
    return torch.cat([g.reshape(-1) for g in gs])


def _direct(model, losses, params_, eff):
    """Unweighted task gradients on ``params_``, the applied update and the expected columns."""
    g = {}
    for t in TASKS:
        gs = torch.autograd.grad(losses[t], params_, retain_graph=True, allow_unused=True)
        g[t] = _flat(
            [torch.zeros_like(p) if x is None else x for x, p in zip(gs, params_, strict=True)]
        )
    u = eff["det"] * g["det"] + eff["cls"] * g["cls"]
    return {
        "wnorm_det": eff["det"] * g["det"].norm().item(),
        "wnorm_cls": eff["cls"] * g["cls"].norm().item(),
        "share_det": (eff["det"] * g["det"] @ u).item() / (u @ u).item(),
        "share_cls": (eff["cls"] * g["cls"] @ u).item() / (u @ u).item(),
    }


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("fixed", {"weights": W0, "cheap_diagnostics": True}),
        ("uncertainty", {"initial_weights": {"det": 1.0, "cls": 0.5}, "cheap_diagnostics": True}),
        ("rlw", {"weights": W0, "seed": 3, "cheap_diagnostics": True}),
        ("gradnorm", {"initial_weights": W0, "alpha": 1.5, "lr": 0.1}),
        ("pcgrad", {"initial_weights": W0}),
        ("imtl_g", {"initial_weights": W0}),
    ],
)
def test_weighted_norms_and_shares_match_direct_autograd(method, kwargs):
    model = make_model()
    bal = make_balancer(method, **kwargs)
    out, losses = forward(model)
    rec = bal.step(losses, out, model, diagnostics_due=True)
    eff = rec.effective
    if method in ("pcgrad", "imtl_g"):
        agg = [rec.info[f"agg_weight_{t}"] for t in TASKS]
        assert eff == pytest.approx({t: W0[t] * a for t, a in zip(TASKS, agg, strict=True)})
    else:
        assert eff == pytest.approx(rec.weights)
    by_scope = {r["scope"]: r for r in rec.diagnostics}
    fresh = make_model()
    _, ref_losses = forward(fresh)
    scopes = {"W": [fresh.last.weight], "trunk": fresh.shared_parameters()}
    for scope, ps in scopes.items():
        expected = _direct(fresh, ref_losses, ps, eff)
        row = by_scope[scope]
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-8), (scope, key)
        assert row["share_det"] + row["share_cls"] == pytest.approx(1.0)
        assert (row["eff_weight_det"], row["eff_weight_cls"]) == pytest.approx(
            (eff["det"], eff["cls"])
        )


def test_jd_shared_update_is_the_effective_combination():
    """The gradient torchjd puts on the trunk is sum_i e_i g_i with the logged e_i."""
    model = make_model()
    out, losses = forward(model)
    rec = make_balancer("imtl_g", initial_weights=W0).step(
        losses, out, model, diagnostics_due=False
    )
    fresh = make_model()
    _, ref_losses = forward(fresh)
    ps = fresh.shared_parameters()
    g = {t: _flat(torch.autograd.grad(ref_losses[t], ps, retain_graph=True)) for t in TASKS}
    expected = rec.effective["det"] * g["det"] + rec.effective["cls"] * g["cls"]
    torch.testing.assert_close(_flat([p.grad for p in model.shared_parameters()]), expected)


def test_update_shares_hand_checked():
    assert update_shares(1.0, 1.0, 0.0, 1.0, 1.0) == pytest.approx((0.5, 0.5))
    # opposite gradients, detection twice as strong: u = g_det / 2 in magnitude, cls pulls back
    assert update_shares(2.0, 1.0, -1.0, 1.0, 1.0) == pytest.approx((2.0, -1.0))
    assert update_shares(3.0, 4.0, 0.0, 1.0, 0.0) == pytest.approx((1.0, 0.0))
    assert all(math.isnan(x) for x in update_shares(0.0, 0.0, float("nan"), 1.0, 1.0))


def test_null_reference_on_known_cases():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    same = null_reference([(a**2).sum() + b.sum(), (a**2).sum() + b.sum()], [a, b], a)
    assert same == pytest.approx({"trunk": 1.0, "W": 1.0})
    orthogonal = null_reference([a[0] * 1.0, a[1] * 1.0], [a, b], a)
    assert orthogonal == pytest.approx({"trunk": 0.0, "W": 0.0})
    opposite = null_reference([a.sum(), -2 * a.sum()], [a], a)
    assert opposite == pytest.approx({"trunk": -1.0, "W": -1.0})


def test_half_batches_of_a_duplicated_batch_give_null_cosine_one():
    torch.manual_seed(0)
    model = build_model("multitask", "n", nc=4, n_views=3, attach=9, dropout=0.0).train()
    crit = YoloLoss(model.detect, 64)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    images = torch.cat([x, x])
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.2], [1, 2, 0.4, 0.6, 0.2, 0.4]])
    t2 = t.clone()
    t2[:, 0] += 2
    out = model(images)
    halves = half_batch_losses(crit, out.det, torch.cat([t, t2]))
    assert halves[0].item() == pytest.approx(halves[1].item(), rel=1e-6)
    null = null_reference(halves, model.shared_parameters(), model.last_shared_weight)
    assert null["trunk"] == pytest.approx(1.0, abs=1e-5) and null["W"] == pytest.approx(
        1.0, abs=1e-5
    )


def test_stopgrad_puts_exactly_zero_classification_gradient_on_the_trunk():
    torch.manual_seed(0)
    model = build_model("stopgrad", "n", nc=4, n_views=3, attach=9, dropout=0.0).train()
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shared_features == [] and out.task_features == {}
    view_loss(out.view_logits, torch.tensor([0, 2])).backward()
    trunk = [p for m in model.detector.model[: model.attach + 1] for p in m.parameters()]
    assert trunk and all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in trunk)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert model.shared_parameters() == [] and len(model.clip_groups()) == 2


def _detector_state(root):
    state = torch.load(root / "weights.pt", weights_only=True)["state_dict"]
    return {k.removeprefix("detector."): v for k, v in state.items() if k.startswith("detector.")}


def test_controls_detector_trains_exactly_as_the_detector_alone(tmp_path, tiny_caches):
    """Clipped and optimised per network, a control's detector is det_only's, bit for bit.

    A tiny clipping norm makes every step clipped, so a shared clip would show at once.
    """
    base = params(epochs=1, method="fixed", augment=False, grad_clip=0.01, w_cls=1.0)
    states = {}
    for model in ("det_only", "dual_backbone", "stopgrad"):
        root = tmp_path / model
        train(replace(base, model=model), paths(root, tiny_caches["train"]))
        states[model] = _detector_state(root)
    ref = states["det_only"]
    for model in ("dual_backbone", "stopgrad"):
        assert states[model].keys() == ref.keys()
        for key in ref:
            assert torch.equal(states[model][key], ref[key]), (model, key)
    # and the multitask model, whose trunk does receive the view gradient, differs
    root = tmp_path / "multitask"
    train(replace(base, model="multitask"), paths(root, tiny_caches["train"]))
    mt = _detector_state(root)
    assert any(not torch.equal(mt[k], ref[k]) for k in ref)


@pytest.mark.parametrize("method", ["fixed", "gradnorm", "uncertainty", "rlw", "pcgrad", "imtl_g"])
def test_every_method_logs_its_effective_weights(tmp_path, tiny_caches, method):
    p = params(epochs=1, method=method, augment=False)
    train(p, paths(tmp_path, tiny_caches["train"]))
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert set(INFO_COLUMNS) <= set(steps.columns)
    for t in TASKS:
        assert steps[f"eff_weight_{t}"].notna().all() and (steps[f"eff_weight_{t}"] > 0).all()
    if method in ("pcgrad", "imtl_g"):
        for t in TASKS:
            expected = steps[f"weight_{t}"] * steps[f"agg_weight_{t}"]
            pd.testing.assert_series_equal(steps[f"eff_weight_{t}"], expected, check_names=False)
    else:
        pd.testing.assert_series_equal(
            steps["eff_weight_cls"], steps["weight_cls"], check_names=False
        )
    if method == "uncertainty":
        expected = (-steps["log_var_cls"]).map(math.exp)
        pd.testing.assert_series_equal(steps["weight_cls"], expected, check_names=False, rtol=1e-6)
    if method == "rlw":
        assert steps["weight_cls"].nunique() == len(steps)  # a new draw every step
    diag = pd.read_csv(tmp_path / "diagnostics.csv")
    trunk = diag[diag["scope"] == "trunk"]
    assert len(trunk) and trunk["null_cosine"].between(-1, 1).all()
    assert diag[diag["scope"] == "feature"]["null_cosine"].isna().all()


def test_last_partial_batch_is_dropped(tmp_path, tiny_caches):
    batches = batch_order(16, 5, seed=0, epoch=0)
    assert [len(b) for b in batches] == [5, 5, 5]
    assert len(set(torch.cat(batches).tolist())) == 15
    with pytest.raises(ValueError, match="fewer than one batch.*train.batch_size"):
        batch_order(3, 4, seed=0, epoch=0)
    # every logged step is a full batch, so the per-image loss scale never changes within an epoch
    p = params(epochs=2, batch_size=5, nominal_batch=5, method="fixed", augment=False)
    train(p, paths(tmp_path, tiny_caches["train"]))
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert steps.groupby("epoch").size().tolist() == [3, 3]
