"""Random loss weighting (Lin, Ye, Zhang, Tsang, TMLR 2022, "Reasonable effectiveness of
random weighting"): a cheap loss-weighting baseline from the MTL literature.

Each step draws ``z ~ N(0, I)`` (one value per task) and weights the losses by
``w_i = K softmax(z)_i * b_i``, with ``b_i`` the experiment's base weights (seed: 1.0 / 0.01) and
``K`` the number of tasks. Lin et al. weight the raw losses by ``softmax(z)``; multiplying by
``K b_i`` keeps every method of this study on the same starting objective (the YOLOv5 detection
loss is multiplied by the batch size, so unit base weights would hand the trunk to detection
alone), and ``E[K softmax(z)_i] = 1`` by symmetry, so on average the objective is the base one.

The draws come from the balancer's own ``torch.Generator`` seeded from the run seed, saved in
``state_dict``, so a resumed run draws the same weights. The model gradient is that of
``sum_i w_i L_i`` (the shared weighted backward, like ``FixedWeights``, with the same optional
cheap rows); the next weights are drawn after it (``update``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from echomtl.balancing.base import TASKS, Balancer, Measurement, task_weights

if TYPE_CHECKING:
    from echomtl.study import TrainParams


class RandomLossWeighting(Balancer):
    """``w_i = K softmax(z)_i b_i`` with ``z ~ N(0, I)`` drawn anew at every step."""

    name = "rlw"

    def __init__(
        self, base_weights: Mapping[str, float], seed: int = 0, cheap_diagnostics: bool = False
    ) -> None:
        unknown = sorted(set(base_weights) - set(TASKS))
        if unknown or "det" not in base_weights:
            raise ValueError(
                f"base_weights must have 'det' and keys in {TASKS}, got {base_weights}"
            )
        if any(not float(v) > 0 for v in base_weights.values()):
            raise ValueError(f"random weighting needs base weights > 0, got {dict(base_weights)}")
        self.tasks = tuple(t for t in TASKS if t in base_weights)
        self.base = {t: float(base_weights[t]) for t in self.tasks}
        self.cheap_diagnostics = cheap_diagnostics
        self._generator = torch.Generator().manual_seed(int(seed) * 7919 + 0x52_4C_57)
        self._next = self._draw()

    def _draw(self) -> dict[str, float]:
        if len(self.tasks) == 1:
            return dict(self.base)
        z = torch.randn(len(self.tasks), generator=self._generator, dtype=torch.float64)
        scale = (len(self.tasks) * torch.softmax(z, 0)).tolist()
        return {t: s * self.base[t] for t, s in zip(self.tasks, scale, strict=True)}

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._next)

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "generator": self._generator.get_state(),
                "next": dict(self._next)}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != list(self.tasks):
            raise ValueError(f"state is for tasks {state['tasks']}, balancer has {self.tasks}")
        self._generator.set_state(state["generator"])
        self._next = {t: float(v) for t, v in state["next"].items()}

    @classmethod
    def from_params(cls, p: TrainParams, device: torch.device) -> RandomLossWeighting:
        """Base weights ``w_det``/``w_cls``, draws seeded from the run seed."""
        return cls(task_weights(p), seed=p.seed, cheap_diagnostics=p.model == "multitask")

    def step_weights(self, tasks: Sequence[str]) -> dict[str, float]:
        """This step's draw."""
        return {t: self._next[t] for t in tasks}

    def update(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement | None,
    ) -> dict[str, float]:
        """Draw the next step's weights."""
        self._next = self._draw()
        return {}
