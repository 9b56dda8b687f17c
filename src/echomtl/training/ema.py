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
        self._pairs: tuple[int, list, list, list, list] | None = None

    def _tensor_pairs(self, model: nn.Module) -> tuple[list, list, list, list]:
        """(EMA floats, model floats, EMA others, model others), gathered once per model.

        ``state_dict()`` builds a new dict of ~500 entries on every call; the tensors it returns
        are the same objects for the life of a module (``load_state_dict`` copies in place).
        """
        if self._pairs is None or self._pairs[0] != id(model):
            source = model.state_dict(keep_vars=True)
            floats, sources, others, other_sources = [], [], [], []
            for name, value in self.module.state_dict(keep_vars=True).items():
                is_float = value.dtype.is_floating_point
                (floats if is_float else others).append(value)
                (sources if is_float else other_sources).append(source[name])
            self._pairs = (id(model), floats, sources, others, other_sources)
        return self._pairs[1:]

    def current_decay(self) -> float:
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``e = d * e + (1 - d) * w`` for the float state; integer buffers are copied."""
        self.updates += 1
        d = self.current_decay()
        floats, sources, others, other_sources = self._tensor_pairs(model)
        # multi-tensor kernels: the same two operations per element as a loop of mul_ and add_
        torch._foreach_mul_(floats, d)
        torch._foreach_add_(floats, [s.detach() for s in sources], alpha=1.0 - d)
        for value, source in zip(others, other_sources, strict=True):
            value.copy_(source)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
