"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018), as specified in docs/methods.md.

Per step t with weights w_i(t) > 0 (tasks ``det`` and ``cls``):

1. ``g_i = dL_i/dW`` on W = ``model.last_shared_weight``; ``G_i = w_i ||g_i||``.
2. ``G_mean = mean_i G_i``.
3. ``L~_i = L_i(t) / L_i(0)``; ``r_i = L~_i / mean_j L~_j``.
4. ``target_i = G_mean r_i ** alpha`` (a constant).
5. ``L_grad = sum_i |G_i - target_i|``; ``dL_grad/dw_i = sign(G_i - target_i) ||g_i||`` (set by hand
   on the weight parameter: no second-order autograd).
6. One step of the balancer's OWN optimizer (Adam or SGD, no weight decay, created once).
7. Clamp ``w_i >= min_weight``, then renormalise so that ``sum_i w_i`` equals ``S0``: with
   ``renormalise="initial_sum"`` the initial weights' sum (1.01 for the seed's 1.0 / 0.01), with
   ``"task_count"`` the number of tasks, as Chen et al. do (the initial weights are then scaled to
   that sum, their ratio kept: 1.0 / 0.01 start as 1.98 / 0.0198). Which one matters: under
   ``initial_sum`` every gain of ``w_cls`` is a loss of ``w_det`` below the fixed-weight runs'
   1.0, so part of a GradNorm effect is a smaller detection step. Renormalising multiplies by a
   positive factor, so the weights stay strictly positive (each ends >= ``min_weight * S0 /
   sum(clamped)``, which may be slightly below ``min_weight`` but never 0 or negative). This runs
   after EVERY update.

The model gradient is that of ``sum_i w_i(t) L_i`` with the pre-update weights, from the shared
backward (``Balancer.backward``, which measures ``g_i`` with ``backward_with_task_gradients``: hooks
on the two aliases of the shared feature, then a local backward through the last shared layer per
task); ``L_grad`` never reaches the model's ``.grad``. The update is ``update``, from the measured
``||g_i||``.

L(0): the mean of the first ``l0_window`` steps' losses, fixed for the rest of training (never
reset; restored by ``load_state_dict``). Weights are NOT updated while L(0) is unknown: the first
update happens at the step that completes the window (so ``l0_window=1`` updates from the very
first step, as Chen et al. do, with ``r_i = 1``). Updating earlier would need a ratio to a
reference that does not exist yet. A task whose L(0) is 0 gets ``L~_i = 1`` (neutral).

Micro-batches: the weights are updated at every ``step`` call, i.e. every micro-batch; with
gradient accumulation the accumulated model gradient mixes consecutive weights (logged per step).
A step whose losses or norms are not finite leaves the weights unchanged.

When only ``det`` is present (det_only) or the model has no shared trunk (dual_backbone), ``step``
is a plain backward of ``sum_i w_i L_i`` and the weights do not move.

Diagnostics rows (every step, two tasks and a trunk): scope ``W`` (``g_i`` on W) and scope
``feature`` (``dL_i/df`` from the hooks), each with the columns of ``DIAGNOSTIC_KEYS`` (norms of
UNWEIGHTED gradients, the weighted norms and update shares with the weights used this step,
which are also the effective ones: the trunk receives ``sum_i w_i g_i``). The ``W`` row adds
``G_det, G_cls`` (``w_i ||g_i||``), ``target_det, target_cls``, ``r_det, r_cls`` (inverse training
rates) and ``L_grad`` (NaN for the last five while L(0) is unknown). Plus a ``trunk`` row when
``diagnostics_due``. ``StepRecord.info`` carries the same extra keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from echomtl.balancing.base import TASKS, Balancer, Measurement, task_weights

if TYPE_CHECKING:
    from echomtl.study import TrainParams

OPTIMIZERS = ("adam", "sgd")


#: What the weights' sum is renormalised to after every update (step 7).
RENORMALISE = ("initial_sum", "task_count")


def _sign(x: float) -> float:
    return float((x > 0) - (x < 0))


class GradNorm(Balancer):
    """GradNorm with its own weight optimizer; see the module docstring for the exact rules.

    Args:
        initial_weights: ``{"det": w_det, "cls": w_cls}`` (all > 0).
        alpha: asymmetry hyper-parameter (paper: 1.0, 1.5, 2.0).
        lr: learning rate of the weight optimizer.
        optimizer: ``"adam"`` or ``"sgd"`` (plain SGD, no momentum); never weight decay.
        l0_window: number of first steps averaged into L(0).
        min_weight: clamp floor applied before renormalisation.
        renormalise: the sum the weights keep, ``"initial_sum"`` or ``"task_count"`` (module
            docstring, step 7).
    """

    name = "gradnorm"
    needs_task_gradients = True

    def __init__(
        self,
        initial_weights: Mapping[str, float],
        alpha: float,
        lr: float,
        optimizer: str = "adam",
        l0_window: int = 1,
        min_weight: float = 1e-4,
        renormalise: str = "initial_sum",
    ) -> None:
        unknown = sorted(set(initial_weights) - set(TASKS))
        if unknown or "det" not in initial_weights:
            raise ValueError(f"initial_weights must have 'det' and keys in {TASKS}, got {unknown}")
        if any(not float(v) > 0 for v in initial_weights.values()):
            raise ValueError(f"GradNorm weights must be > 0, got {dict(initial_weights)}")
        if alpha is None or not float(alpha) >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if int(l0_window) != l0_window or l0_window < 1:
            raise ValueError(f"l0_window must be an integer >= 1, got {l0_window}")
        if renormalise not in RENORMALISE:
            raise ValueError(f"renormalise must be one of {RENORMALISE}, got {renormalise!r}")
        self.tasks = tuple(t for t in TASKS if t in initial_weights)
        initial_sum = float(sum(float(initial_weights[t]) for t in self.tasks))
        #: S0, the sum the weights keep (step 7)
        self.weight_sum = initial_sum if renormalise == "initial_sum" else float(len(self.tasks))
        self.renormalise = renormalise
        if not 0 < min_weight < self.weight_sum / len(self.tasks):
            raise ValueError(
                f"min_weight must be in (0, {self.weight_sum / len(self.tasks)}), got {min_weight}"
            )
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.optimizer_name = optimizer
        self.l0_window = int(l0_window)
        self.min_weight = float(min_weight)
        # float64 on the CPU: two scalars; the loss is multiplied by Python floats, so the model
        # may live on any device.
        init = [float(initial_weights[t]) for t in self.tasks]
        if renormalise == "task_count":
            init = [w * self.weight_sum / initial_sum for w in init]
        self._w = nn.Parameter(torch.tensor(init, dtype=torch.float64))
        if optimizer == "adam":
            self._optimizer: torch.optim.Optimizer = torch.optim.Adam(
                [self._w], lr=self.lr, weight_decay=0.0
            )
        else:
            self._optimizer = torch.optim.SGD([self._w], lr=self.lr, momentum=0.0, weight_decay=0.0)
        self._l0_sum = [0.0] * len(self.tasks)
        self._l0_count = 0
        self._l0: list[float] | None = None
        self._steps = 0  # two-task steps seen
        self._updates = 0  # weight updates made

    # -- public state -------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._w.detach().tolist(), strict=True))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The weight optimizer (created once in ``__init__``)."""
        return self._optimizer

    @property
    def l0(self) -> dict[str, float] | None:
        """L_i(0) once the window is complete, else None."""
        return None if self._l0 is None else dict(zip(self.tasks, self._l0, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "weights": self._w.detach().clone(),
            "optimizer": self._optimizer.state_dict(),
            "l0_sum": list(self._l0_sum),
            "l0_count": self._l0_count,
            "l0": None if self._l0 is None else list(self._l0),
            "steps": self._steps,
            "updates": self._updates,
            "weight_sum": self.weight_sum,
            "renormalise": self.renormalise,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != list(self.tasks):
            raise ValueError(f"state is for tasks {state['tasks']}, balancer has {self.tasks}")
        with torch.no_grad():
            self._w.copy_(torch.as_tensor(state["weights"], dtype=torch.float64))
        self._optimizer.load_state_dict(state["optimizer"])
        self._l0_sum = [float(v) for v in state["l0_sum"]]
        self._l0_count = int(state["l0_count"])
        self._l0 = None if state["l0"] is None else [float(v) for v in state["l0"]]
        self._steps = int(state["steps"])
        self._updates = int(state["updates"])
        if state["renormalise"] != self.renormalise:
            raise ValueError(
                f"state renormalises to {state['renormalise']!r}, balancer to {self.renormalise!r}"
            )
        self.weight_sum = float(state["weight_sum"])

    @classmethod
    def from_params(cls, p: TrainParams, device: torch.device) -> GradNorm:
        """Initial weights ``w_det``/``w_cls``, the experiment's alpha, config ``gradnorm``."""
        return cls(task_weights(p), alpha=p.alpha, **p.gradnorm)

    # -- the rule -----------------------------------------------------------------------------
    def update(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement | None,
    ) -> dict[str, float]:
        """One GradNorm update from the losses and the measured ``||g_i||`` on W (not measured:
        no update); its quantities are logged and added to the ``W`` row."""
        if measured is None:
            return {}
        loss_values = torch.stack([losses[t].detach().double() for t in self.tasks]).tolist()
        n_det, n_cls = measured.similarity["W"][:2]
        extras = self._update(loss_values, [n_det, n_cls], [weights[t] for t in self.tasks])
        measured.columns["W"] = extras
        return dict(extras)

    def _update(self, loss_values: list[float], norms: list[float], w: list[float]) -> dict:
        """One GradNorm update from this step's losses and ``||g_i||``; returns logged values."""
        n = len(self.tasks)
        nan = float("nan")
        self._steps += 1
        finite = all(math.isfinite(v) for v in (*loss_values, *norms))
        if self._l0 is None and finite:
            self._l0_sum = [s + v for s, v in zip(self._l0_sum, loss_values, strict=True)]
            self._l0_count += 1
            if self._l0_count >= self.l0_window:
                self._l0 = [s / self._l0_count for s in self._l0_sum]
        g_big = [wi * ni for wi, ni in zip(w, norms, strict=True)]
        extras = {f"G_{t}": g for t, g in zip(self.tasks, g_big, strict=True)}
        extras.update({f"target_{t}": nan for t in self.tasks})
        extras.update({f"r_{t}": nan for t in self.tasks})
        extras["L_grad"] = nan
        if self._l0 is None or not finite:
            return extras

        g_mean = sum(g_big) / n
        ratios = [v / l0 if l0 > 0 else 1.0 for v, l0 in zip(loss_values, self._l0, strict=True)]
        mean_ratio = sum(ratios) / n
        r = [x / mean_ratio for x in ratios] if mean_ratio > 0 else [1.0] * n
        targets = [g_mean * ri**self.alpha for ri in r]
        diffs = [g - tg for g, tg in zip(g_big, targets, strict=True)]
        l_grad = sum(abs(d) for d in diffs)
        grad = [_sign(d) * ni for d, ni in zip(diffs, norms, strict=True)]

        self._w.grad = torch.tensor(grad, dtype=self._w.dtype)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self._w.clamp_(min=self.min_weight)
            self._w.mul_(self.weight_sum / self._w.sum())
        self._updates += 1

        extras.update({f"target_{t}": tg for t, tg in zip(self.tasks, targets, strict=True)})
        extras.update({f"r_{t}": ri for t, ri in zip(self.tasks, r, strict=True)})
        extras["L_grad"] = l_grad
        return extras
