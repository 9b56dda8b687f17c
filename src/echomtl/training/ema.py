"""Exponential moving average of the model's float state (YOLOv5 ModelEMA semantics)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """EMA with the ramped decay d = decay * (1 - exp(-updates / tau)) of the reference recipe.

    The ramp matters for short runs: early on the EMA follows the weights closely instead of
    staying near the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        source = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1.0 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
