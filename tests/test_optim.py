"""The YOLOv5 v7.0 optimizer recipe: parameter groups, warmup, schedule, accumulation."""

import math

import pytest
import torch
from torch import nn

from echomtl.training.optim import (
    accumulation_steps,
    apply_warmup,
    build_optimizer,
    lr_lambda,
    warmup_accumulation,
    warmup_iterations,
)


def model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_three_groups_and_an_undecayed_group_for_balancer_parameters():
    m = model()
    s = nn.Parameter(torch.zeros(2))
    opt = build_optimizer(m, lr0=0.01, momentum=0.937, weight_decay=5e-4, extra_parameters=[s])
    biases, weights, bn, extra = opt.param_groups
    assert [p.shape for p in biases["params"]] == [torch.Size([4]), torch.Size([2])]  # BN + conv
    assert {p.dim() for p in weights["params"]} == {4} and weights["weight_decay"] == 5e-4
    assert bn["params"][0] is m[1].weight and bn["weight_decay"] == 0.0
    assert extra["params"] == [s] and extra["weight_decay"] == 0.0
    assert biases["weight_decay"] == 0.0 and biases["nesterov"]


def test_warmup_ramps_bias_lr_down_and_others_up():
    opt = build_optimizer(model(), lr0=0.01, momentum=0.937, weight_decay=5e-4)
    apply_warmup(opt, 0, 100, 1.0, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    apply_warmup(opt, 50, 100, 1.0, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.055, 0.005, 0.005])
    apply_warmup(opt, 100, 100, 0.5, warmup_bias_lr=0.1, warmup_momentum=0.8, momentum=0.937)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005] * 3)
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.937)


def test_schedule_and_accumulation_rules():
    lf = lr_lambda(epochs=10, lrf=0.01)
    assert lf(0) == 1.0 and lf(10) == pytest.approx(0.01) and lf(5) == pytest.approx(0.505)
    cos = lr_lambda(epochs=10, lrf=0.01, cosine=True)
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.01)
    assert cos(5) == pytest.approx((1 - math.cos(math.pi / 2)) / 2 * (0.01 - 1) + 1)
    assert warmup_iterations(3.0, 10) == 100 and warmup_iterations(3.0, 50) == 150
    # the floor is a setting (train.warmup_min_iterations): 0 leaves warmup_epochs alone
    assert warmup_iterations(1.0, 22, minimum=0) == 22 and warmup_iterations(0.0, 22, 0) == 0
    assert accumulation_steps(64, 16) == 4 and accumulation_steps(64, 100) == 1
    assert warmup_accumulation(0, 100, 64, 16) == 1
    assert warmup_accumulation(100, 100, 64, 16) == 4


def test_multi_tensor_sgd_and_ema_give_the_numbers_of_the_per_tensor_loop():
    """The speed-ups (foreach SGD, foreach EMA) change no number: bit-identical over 5 steps."""
    import copy

    from echomtl.training.ema import ModelEMA

    torch.manual_seed(0)
    fast = model()
    slow = copy.deepcopy(fast)
    opt_fast = build_optimizer(fast, lr0=0.01, momentum=0.937, weight_decay=5e-4)
    opt_slow = build_optimizer(slow, lr0=0.01, momentum=0.937, weight_decay=5e-4)
    for group in opt_slow.param_groups:
        group["foreach"] = False
    assert all(group["foreach"] for group in opt_fast.param_groups)
    ema = ModelEMA(fast, tau=2.0)  # a short ramp: the decay moves over these steps
    reference = copy.deepcopy(slow).eval()
    x = torch.randn(4, 3, 8, 8)
    for step in range(1, 6):
        for net, opt in ((fast, opt_fast), (slow, opt_slow)):
            opt.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            opt.step()
        ema.update(fast)
        d = ema.decay * (1 - math.exp(-step / ema.tau))
        with torch.no_grad():
            for e, w in zip(
                reference.state_dict().values(), slow.state_dict().values(), strict=True
            ):
                if e.dtype.is_floating_point:
                    e.mul_(d).add_(w, alpha=1 - d)
                else:
                    e.copy_(w)
    for a, b in zip(fast.state_dict().values(), slow.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ema.module.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
