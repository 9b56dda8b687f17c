"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018), in the form the spec fixes.

``L = sum_i exp(-s_i) L_i + s_i`` with learnable log-variances ``s_i``. The ``s_i`` are returned by
``extra_parameters()`` so the trainer puts them in the MODEL optimizer, without weight decay
(decaying a log-variance towards 0 would bias the weighting); the balancer never steps them
itself. Their gradient, ``1 - exp(-s_i) L_i``, is accumulated into ``s.grad`` by the same backward
as the model gradient, so micro-batch accumulation works for them too. Reported weights are
``exp(-s_i)`` (before the optimizer step).

Initialisation: ``initial_log_vars`` (``s_i`` directly), or ``initial_weights`` (``s_i =
-log w_i``: start from the same weights as the other methods; this is what ``from_params`` does
with the experiment's ``w_det``/``w_cls``), or 0 (Kendall's default) when neither is given.
The fixed point of the update does not depend on the start: ``s_i -> log L_i``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from echomtl.balancing.base import TASKS, Balancer, Measurement


class UncertaintyWeighting(Balancer):
    """Learned ``w_i = exp(-s_i)`` with the ``+ s_i`` regulariser.

    Args:
        initial_weights: start weights ``w_i`` (> 0), i.e. ``s_i = -log w_i``.
        initial_log_vars: start ``s_i`` (exclusive with ``initial_weights``).
        tasks: tasks when neither is given (``s_i = 0``).
        cheap_diagnostics: add per-step ``W``/``feature`` rows (as ``FixedWeights``).
    """

    name = "uncertainty"

    def __init__(
        self,
        initial_weights: Mapping[str, float] | None = None,
        initial_log_vars: Mapping[str, float] | None = None,
        tasks: Sequence[str] = TASKS,
        cheap_diagnostics: bool = False,
    ) -> None:
        if initial_weights is not None and initial_log_vars is not None:
            raise ValueError("give initial_weights or initial_log_vars, not both")
        if initial_weights is not None:
            if any(not float(v) > 0 for v in initial_weights.values()):
                raise ValueError(f"initial_weights must be > 0, got {dict(initial_weights)}")
            start = {t: -math.log(float(v)) for t, v in initial_weights.items()}
        elif initial_log_vars is not None:
            start = {t: float(v) for t, v in initial_log_vars.items()}
        else:
            start = dict.fromkeys(tasks, 0.0)
        unknown = sorted(set(start) - set(TASKS))
        if unknown or not start:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {sorted(start)}")
        self.tasks = tuple(t for t in TASKS if t in start)
        self.log_vars = nn.Parameter(torch.tensor([start[t] for t in self.tasks]))
        self.cheap_diagnostics = cheap_diagnostics

    @property
    def weights(self) -> dict[str, float]:
        values = torch.exp(-self.log_vars.detach()).tolist()
        return dict(zip(self.tasks, values, strict=True))

    def extra_parameters(self) -> list[nn.Parameter]:
        """The log-variances: optimise them with the model, without weight decay."""
        return [self.log_vars]

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "log_vars": self.log_vars.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != list(self.tasks):
            raise ValueError(f"state is for tasks {state['tasks']}, balancer has {self.tasks}")
        with torch.no_grad():  # in place: the model optimizer keeps referring to this Parameter
            self.log_vars.copy_(torch.as_tensor(state["log_vars"]))

    def objective(self, losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """``sum_i exp(-s_i) L_i + s_i``: its gradient reaches the model's and ``s``'s ``.grad``."""
        tasks = [t for t in TASKS if t in losses]
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise KeyError(f"no log-variance for task(s) {missing}; balancer has {self.tasks}")
        s = self.log_vars
        root: Tensor | None = None
        for t in tasks:
            s_t = s[self.tasks.index(t)]
            term = torch.exp(-s_t) * losses[t] + s_t
            root = term if root is None else root + term
        if root is None:
            raise ValueError("losses is empty")
        return root

    def update(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement | None,
    ) -> dict[str, float]:
        """Nothing to update (the model optimizer steps ``s``); logs the log-variances."""
        values = self.log_vars.detach().tolist()
        return {f"log_var_{t}": v for t, v in zip(self.tasks, values, strict=True)}
