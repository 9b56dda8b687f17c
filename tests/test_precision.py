"""Mixed precision: scaled backwards report unscaled gradients; the autocast paths run on CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from echomtl.balancing import make_balancer
from echomtl.balancing.diagnostics import null_reference
from echomtl.training.precision import AMP_MODES, Precision
from echomtl.training.trainer import TrainingInterrupted, train

from .test_balancers import JD_METHODS, W0, make_model
from .test_training import assert_same_run, params, paths
from .toy_mtl import ToyMTL

SCALE = 1024.0
KWARGS = {
    "fixed": {"weights": W0, "cheap_diagnostics": True},
    "rlw": {"weights": W0, "seed": 3, "cheap_diagnostics": True},
    "uncertainty": {"initial_weights": W0, "cheap_diagnostics": True},
    "gradnorm": {"initial_weights": W0, "alpha": 1.5, "lr": 0.025, "l0_window": 1},
    **{m: {"initial_weights": W0} for m in JD_METHODS},
}


def _losses(model: ToyMTL, k: int) -> tuple:
    g = torch.Generator().manual_seed(100 + k)
    x = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64)
    v = torch.randint(0, 3, (4,), generator=g)
    out = model(x)
    return out, {"det": ((out.det - y) ** 2).sum() / 10, "cls": F.cross_entropy(out.view_logits, v)}


def _run(method: str, scale: float) -> tuple[list, list, list]:
    model = make_model()
    balancer = make_balancer(method, **copy.deepcopy(KWARGS[method]))
    balancer.grad_scale = scale
    records = []
    for k in range(3):  # GradNorm's weights move after the first step: later steps depend on G_i
        out, losses = _losses(model, k)
        records.append(balancer.step(losses, out, model, diagnostics_due=True))
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    extra = [p.grad.clone() for p in balancer.extra_parameters() if p.grad is not None]
    return records, grads, extra


@pytest.mark.parametrize("method", list(KWARGS))
def test_a_scaled_backward_reports_the_unscaled_gradients(method):
    """With a loss scale, .grad is scaled (for the optimizer's scaler) and nothing else is."""
    plain, plain_grads, plain_extra = _run(method, 1.0)
    scaled, scaled_grads, scaled_extra = _run(method, SCALE)
    for a, b in zip([*plain_grads, *plain_extra], [*scaled_grads, *scaled_extra], strict=True):
        torch.testing.assert_close(b, SCALE * a, rtol=1e-10, atol=1e-12)
    for ra, rb in zip(plain, scaled, strict=True):
        assert ra.weights == pytest.approx(rb.weights, rel=1e-10)
        assert ra.info.keys() == rb.info.keys()
        for key, value in ra.info.items():  # GradNorm's G_i, targets, L_grad; aggregator weights
            assert rb.info[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
        assert [r["scope"] for r in ra.diagnostics] == [r["scope"] for r in rb.diagnostics]
        assert {r["scope"] for r in ra.diagnostics} >= {"W", "trunk"}
        for da, db in zip(ra.diagnostics, rb.diagnostics, strict=True):
            for key, value in da.items():
                if isinstance(value, float):
                    assert db[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key


def test_the_null_reference_does_not_depend_on_the_scale():
    model = make_model()
    _, first = _losses(model, 0)
    _, second = _losses(model, 1)
    params = model.shared_parameters()
    plain = null_reference([first["det"], second["det"]], params, model.last_shared_weight)
    scaled = null_reference(
        [first["det"], second["det"]], params, model.last_shared_weight, scale=SCALE
    )
    assert scaled == pytest.approx(plain, rel=1e-12)


def test_precision_modes():
    cpu = torch.device("cpu")
    assert AMP_MODES == ("fp32", "bf16", "fp16")
    fp32, bf16, fp16 = (Precision(m, cpu) for m in AMP_MODES)
    assert fp32.scale == 1.0 and bf16.scale == 1.0 and bf16.scaler is None
    assert fp16.scaler is not None and fp16.scale == 2.0**16
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with fp32.autocast():
        assert conv(x).dtype == torch.float32
    with bf16.autocast():
        assert conv(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="train.amp must be one of"):
        Precision("fp8", cpu)


def test_fp16_scaler_skips_an_overflowing_step_and_halves_its_scale():
    precision = Precision("fp16", torch.device("cpu"))
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    (precision.scale * (w * float("inf")).sum()).backward()
    precision.unscale_(opt)
    assert precision.step(opt) is False
    assert torch.equal(w.detach(), torch.ones(3)) and precision.scale == 2.0**15
    opt.zero_grad()
    (precision.scale * w.sum()).backward()
    precision.unscale_(opt)
    torch.testing.assert_close(w.grad, torch.ones(3))  # unscaled before clipping
    assert precision.step(opt) is True
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.9))


def test_bf16_autocast_run_trains_and_resumes_exactly(tmp_path, tiny_caches):
    """The trainer's autocast path on CPU: finite losses, GradNorm's G_i, exact resume."""
    p = params(amp="bf16", epochs=1)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(p, paths(whole, tiny_caches["train"]))
    with pytest.raises(TrainingInterrupted):
        train(p, paths(resumed, tiny_caches["train"]), stop_after_batches=2)
    train(p, paths(resumed, tiny_caches["train"]))
    assert_same_run(whole, resumed)
    import pandas as pd

    steps = pd.read_csv(whole / "steps.csv")
    assert steps["loss_det"].map(math.isfinite).all()
    assert steps["G_det"].dropna().gt(0).all() and len(steps["G_det"].dropna()) == len(steps)


def test_fp16_run_with_the_scaler_trains_on_cpu(tmp_path, tiny_caches):
    train(params(amp="fp16", epochs=1, method="pcgrad"), paths(tmp_path, tiny_caches["train"]))
    import pandas as pd

    steps = pd.read_csv(tmp_path / "steps.csv")
    assert steps["loss_det"].map(math.isfinite).all()
    assert steps["agg_weight_det"].notna().all()


def test_loader_workers_give_the_same_run(tmp_path, tiny_caches):
    """Augmented batches built in two worker processes equal those built in the trainer."""
    p = params(epochs=1)
    train(p, paths(tmp_path / "inline", tiny_caches["train"]))
    train(p, paths(tmp_path / "workers", tiny_caches["train"]), workers=2)
    assert_same_run(tmp_path / "inline", tmp_path / "workers")
