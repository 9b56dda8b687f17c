"""Optimizer groups, warmup and learning-rate schedule of YOLOv5 v7.0 (hyp.scratch-low)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


def build_optimizer(
    model: nn.Module,
    lr0: float,
    momentum: float,
    weight_decay: float,
    extra_parameters: Iterable[nn.Parameter] = (),
) -> torch.optim.SGD:
    """SGD Nesterov with the reference's three groups: biases, BN weights (no decay), weights.

    Group 0 must hold the biases: warmup gives that group its own start learning rate.
    Balancer parameters that train with the model (uncertainty log-variances) get a fourth group,
    without decay (decaying a log-variance towards 0 would bias the weighting) and with the
    ordinary warmup from 0, not the bias group's high start rate.
    """
    biases, bn_weights, weights = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias":
                biases.append(param)
            elif name == "weight" and isinstance(module, norm_types):
                bn_weights.append(param)
            else:
                weights.append(param)
    # foreach: one multi-tensor kernel per group instead of a Python loop over ~200 tensors (the
    # same arithmetic per element, so the same numbers; torch enables it by default on CUDA only)
    optimizer = torch.optim.SGD(biases, lr=lr0, momentum=momentum, nesterov=True, foreach=True)
    optimizer.add_param_group({"params": weights, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": bn_weights, "weight_decay": 0.0})
    extra = list(extra_parameters)
    if extra:
        optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
    for group in optimizer.param_groups:
        group["initial_lr"] = lr0
    return optimizer


def lr_lambda(epochs: int, lrf: float, cosine: bool = False) -> Callable[[int], float]:
    """lf(epoch): linear (default) or cosine decay from 1 to lrf."""
    if cosine:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, minimum: int = 100) -> int:
    """Reference rule: ``warmup_epochs`` of batches, at least ``minimum`` (YOLOv5: 100).

    The floor is a parameter because it dominates short schedules: at 22 batches per epoch,
    100 iterations are 4.5 epochs of warm-up, half of a 9-epoch run.
    """
    return max(round(warmup_epochs * batches_per_epoch), minimum)


def apply_warmup(
    optimizer: torch.optim.Optimizer,
    iteration: int,
    n_warmup: int,
    epoch_factor: float,
    warmup_bias_lr: float,
    warmup_momentum: float,
    momentum: float,
) -> None:
    """Ramp lr (bias group from warmup_bias_lr down, others from 0 up) and momentum."""
    xi = [0, n_warmup]
    for j, group in enumerate(optimizer.param_groups):
        start = warmup_bias_lr if j == 0 else 0.0
        group["lr"] = float(np.interp(iteration, xi, [start, group["initial_lr"] * epoch_factor]))
        group["momentum"] = float(np.interp(iteration, xi, [warmup_momentum, momentum]))


def set_epoch_lr(optimizer: torch.optim.Optimizer, epoch_factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * epoch_factor


def accumulation_steps(nominal_batch: int, batch_size: int) -> int:
    return max(round(nominal_batch / batch_size), 1)


def warmup_accumulation(iteration: int, n_warmup: int, nominal_batch: int, batch_size: int) -> int:
    """During warmup the reference accumulates fewer batches, growing to nominal/bs."""
    return max(1, int(np.interp(iteration, [0, n_warmup], [1, nominal_batch / batch_size]).round()))


class Schedule:
    """The learning rate, momentum and gradient accumulation of every iteration of one run.

    ``batches_per_epoch`` full batches an epoch; warm-up over ``n_warmup`` iterations (the bias
    group's rate falling from ``warmup_bias_lr``, the others rising from 0, the accumulation
    growing to ``nominal_batch / batch_size``), then the epoch's rate ``lr0 * lf(epoch)``.
    ``weight_decay`` is the reference's, scaled to the batch that one optimizer step sees.
    """

    def __init__(
        self,
        hyp: dict[str, float],
        epochs: int,
        batch_size: int,
        nominal_batch: int,
        batches_per_epoch: int,
        cos_lr: bool,
        warmup_min_iterations: int,
    ) -> None:
        self.hyp, self.batch_size, self.nominal_batch = hyp, batch_size, nominal_batch
        self.batches_per_epoch = batches_per_epoch
        self.accumulate = accumulation_steps(nominal_batch, batch_size)
        self.weight_decay = hyp["weight_decay"] * batch_size * self.accumulate / nominal_batch
        self.lf = lr_lambda(epochs, hyp["lrf"], cos_lr)
        self.n_warmup = warmup_iterations(
            hyp["warmup_epochs"], batches_per_epoch, warmup_min_iterations
        )

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> int:
        """Set the rates (and momentum in warm-up) of ``iteration``; returns its accumulation."""
        if iteration <= self.n_warmup:
            h = self.hyp
            apply_warmup(
                optimizer, iteration, self.n_warmup, self.lf(epoch), h["warmup_bias_lr"],
                h["warmup_momentum"], h["momentum"],
            )  # fmt: skip
            return warmup_accumulation(
                iteration, self.n_warmup, self.nominal_batch, self.batch_size
            )
        set_epoch_lr(optimizer, self.lf(epoch))
        return self.accumulate
