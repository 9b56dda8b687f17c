"""The ``Balancer`` interface and the pieces every method shares.

A balancer owns the backward pass: given the per-task losses of one micro-batch it ADDS the model
gradient into the parameters' ``.grad`` (never zeroing them, so gradient accumulation over
micro-batches works) and returns a ``StepRecord`` with the task weights it used and diagnostic
rows for ``diagnostics.csv`` (docs/architecture.md, "Balancer").

Shared helpers:
- ``weighted_sum``: ``sum_i w_i L_i`` with Python-float weights (no device question).
- ``has_shared_trunk``: whether the output/model pair has a trunk both tasks reach (not det_only,
  not dual_backbone, both losses present).
- ``backward_with_task_gradients``: ONE backward of ``sum_i w_i L_i`` that also yields each task's
  unweighted gradient at the shared feature and on W (GradNorm's inputs, and the cheap per-step
  diagnostics), at the cost of one local backward through the last shared layer per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from echomtl.balancing.diagnostics import diagnostics_row, trunk_diagnostics, unscale

TASKS = ("det", "cls")
#: Columns of a diagnostics row (docs/architecture.md, ``diagnostics.csv`` less epoch/step).
DIAGNOSTIC_KEYS = (
    "scope", "norm_det", "norm_cls", "cosine", "gms", "weight_det", "weight_cls",
    "eff_weight_det", "eff_weight_cls", "wnorm_det", "wnorm_cls", "share_det", "share_cls",
    "null_cosine",
)  # fmt: skip


@dataclass
class StepRecord:
    """What one ``Balancer.step`` reports.

    weights: the loss weights the model gradient of this step was computed with.
    diagnostics: rows with ``DIAGNOSTIC_KEYS`` (scope ``W``, ``feature`` or ``trunk``); methods may
        add extra keys (documented per class).
    info: per-step scalars a method logs (an aggregator's weights, log-variances, ...); the keys
        must be columns of ``steps.csv`` (``training.trainer.INFO_COLUMNS``).
    effective_weights: the weights the shared-trunk update applied to the UNWEIGHTED task
        gradients (``u = sum_i e_i g_i``); None means the loss weights themselves.
    """

    weights: dict[str, float]
    diagnostics: list[dict] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    effective_weights: dict[str, float] | None = None

    @property
    def effective(self) -> dict[str, float]:
        """``effective_weights``, or the loss weights when the method applies them as they are."""
        return dict(self.weights if self.effective_weights is None else self.effective_weights)


class Balancer:
    """Base class: turn per-task losses into the model gradient (added into ``.grad``).

    Subclasses implement ``step``; ``extra_parameters`` lists learnable parameters that belong in
    the MODEL optimizer (without weight decay); ``state_dict``/``load_state_dict`` make resume
    exact; ``weights`` are the weights the next step will use.
    """

    name = "base"
    #: The loss scale of mixed precision (fp16): what the backward multiplies by and every
    #: measured gradient is divided by. The trainer sets it before each step; 1.0 otherwise.
    grad_scale: float = 1.0

    def step(
        self, losses: dict[str, Tensor], out: Any, model: nn.Module, diagnostics_due: bool
    ) -> StepRecord:
        """Backward of this micro-batch's losses (adding into ``.grad``); returns the record."""
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters to optimise with the model (none by default)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (empty for stateless methods)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    @property
    def weights(self) -> dict[str, float]:
        """Current task weights (those the next step uses)."""
        raise NotImplementedError


def present_tasks(losses: Mapping[str, Tensor], known: tuple[str, ...] = TASKS) -> list[str]:
    """Tasks present in ``losses`` in canonical order; unknown task names are an error."""
    unknown = sorted(set(losses) - set(known))
    if unknown:
        raise KeyError(f"unknown task(s) {unknown} in losses; expected a subset of {known}")
    if not losses:
        raise ValueError("losses is empty")
    return [t for t in known if t in losses]


def weighted_sum(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_i w_i L_i`` over the tasks present in ``losses`` (Python-float weights)."""
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(f"no weight for task(s) {missing}; weights given for {sorted(weights)}")
    tasks = present_tasks(losses)
    total = float(weights[tasks[0]]) * losses[tasks[0]]
    for t in tasks[1:]:
        total = total + float(weights[t]) * losses[t]
    return total


def has_shared_trunk(losses: Mapping[str, Tensor], out: Any) -> bool:
    """True when both tasks have a loss and the model output exposes a shared trunk.

    False for det_only (no ``cls`` loss) and dual_backbone (empty ``shared_features`` and
    ``task_features``): balancers then fall back to a plain weighted backward.
    """
    if not all(t in losses for t in TASKS):
        return False
    shared = getattr(out, "shared_features", None) or []
    feats = getattr(out, "task_features", None) or {}
    return len(shared) > 0 and all(t in feats for t in TASKS)


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's shared parameters that require grad (empty when it has none)."""
    fn = getattr(model, "shared_parameters", None)
    if fn is None:
        return []
    return [p for p in fn() if p.requires_grad]


def last_shared_weight(model: nn.Module) -> nn.Parameter | None:
    """GradNorm's W, or None when the model has no shared trunk."""
    w = getattr(model, "last_shared_weight", None)
    return w if isinstance(w, Tensor) and w.requires_grad else None


def backward_with_task_gradients(
    losses: Mapping[str, Tensor],
    weights: Mapping[str, float],
    task_features: Mapping[str, Tensor],
    weight: Tensor,
    root: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """ONE backward of ``sum_i w_i L_i`` (or of ``root``) into ``.grad``, plus per-task gradients.

    Returns ``(feature_grads, weight_grads)``: for each task ``i`` in ``("det", "cls")`` the
    UNWEIGHTED gradient ``dL_i/df`` at the shared feature ``f`` and ``g_i = dL_i/dW`` on the
    last shared weight ``W``. Nothing but the gradient of the root reaches ``.grad``.

    How (docs/methods.md, "One backward for GradNorm"): the model hands each branch its own
    alias ``a = f.view_as(f)`` (det) and ``b = f.view_as(f)`` (cls). A tensor hook on each alias
    captures ``w_i dL_i/df`` (the branch reads only its alias, so the hooked gradient is exactly
    that task's, scaled by its weight). A hook on ``f`` itself (the aliases' common base) fires
    when both branch gradients have arrived and before the backward continues below ``f``; it
    runs, for each task, ``torch.autograd.grad(f, W, grad_outputs=hooked_i / w_i,
    retain_graph=True)``, which crosses only the last shared layer (activation, BN, convolution)
    and does not touch ``.grad``. ``retain_graph=True`` is needed there because the outer backward
    still has to run through that same layer; the outer backward itself does not retain the
    graph, so nothing is held in memory after the step.

    ``root``: the scalar to differentiate when it is not ``sum_i w_i L_i`` with float weights
    (uncertainty weighting: ``sum_i exp(-s_i) L_i + s_i``); ``weights`` must then hold the values
    by which each ``L_i`` enters it (used to un-scale the hooked gradients). A task whose weight is
    0 cannot be un-scaled: its gradients are returned as NaN.

    ``scale``: the mixed-precision loss scale. The backward runs on ``scale * root`` (what reaches
    ``.grad`` is scaled, for the optimizer's scaler to undo); the returned gradients are divided
    by ``scale * w_i`` in float32, after the local backward, so they are the unscaled ones and no
    value larger than the backward's own passes through float16.
    """
    a, b = task_features["det"], task_features["cls"]
    base = a._base
    if a is b or base is None or b._base is not base or base.shape != a.shape:
        raise ValueError(
            "task_features['det'] and ['cls'] must be two distinct aliases f.view_as(f) of the "
            "same shared feature f (docs/architecture.md, 'Model output')"
        )
    f = base
    hooked: dict[str, Tensor] = {}
    on_w: dict[str, Tensor] = {}
    busy = False

    def capture(task: str):  # noqa: ANN202 - local hook factory
        def hook(grad: Tensor) -> None:
            hooked[task] = grad.detach()

        return hook

    def local(grad: Tensor) -> None:
        nonlocal busy
        if busy:  # the local autograd.grad below starts at f and re-enters this hook
            return
        busy = True
        try:
            for task in TASKS:
                w = float(weights[task])
                if task not in hooked or w == 0.0:
                    continue
                (g,) = torch.autograd.grad(
                    f, weight, grad_outputs=hooked[task], retain_graph=True, allow_unused=True
                )
                on_w[task] = torch.zeros_like(weight) if g is None else unscale(g, w * scale)
        finally:
            busy = False

    handles = [a.register_hook(capture("det")), b.register_hook(capture("cls"))]
    handles.append(f.register_hook(local))
    try:
        total = weighted_sum(losses, weights) if root is None else root
        scaled_backward(total, scale)
    finally:
        for h in handles:
            h.remove()

    feature_grads: dict[str, Tensor] = {}
    weight_grads: dict[str, Tensor] = {}
    for task in TASKS:
        w = float(weights[task])
        if w == 0.0:
            feature_grads[task] = torch.full_like(f, float("nan"))
            weight_grads[task] = torch.full_like(weight, float("nan"))
            continue
        feature_grads[task] = (
            unscale(hooked[task], w * scale) if task in hooked else torch.zeros_like(f)
        )
        weight_grads[task] = on_w.get(task, torch.zeros_like(weight))
    return feature_grads, weight_grads


def standard_backward(
    losses: Mapping[str, Tensor],
    out: Any,
    model: nn.Module,
    weights: Mapping[str, float],
    diagnostics_due: bool,
    cheap_diagnostics: bool = False,
    root: Tensor | None = None,
    scale: float = 1.0,
) -> list[dict]:
    """Backward of ``sum_i w_i L_i`` (or of ``root``) into ``.grad``; returns diagnostics rows.

    With a shared trunk: a ``trunk`` row when ``diagnostics_due`` (computed first, on the same
    graph), and ``W``/``feature`` rows every step when ``cheap_diagnostics`` (via
    ``backward_with_task_gradients``, same single backward). Without one: a plain backward, no rows.
    ``scale``: the mixed-precision loss scale (``backward_with_task_gradients``); rows are unscaled.
    """
    rows: list[dict] = []
    trunk = has_shared_trunk(losses, out)
    if trunk and diagnostics_due:
        params = shared_parameters(model)
        if params:
            rows.append(trunk_diagnostics(losses, params, weights, scale=scale))
    w_param = last_shared_weight(model)
    if trunk and cheap_diagnostics and w_param is not None:
        feat, on_w = backward_with_task_gradients(
            losses, weights, out.task_features, w_param, root=root, scale=scale
        )
        rows.insert(0, diagnostics_row("feature", feat["det"], feat["cls"], weights))
        rows.insert(0, diagnostics_row("W", on_w["det"], on_w["cls"], weights))
        return rows
    total = weighted_sum(losses, weights) if root is None else root
    scaled_backward(total, scale)
    return rows


def scaled_backward(total: Tensor, scale: float = 1.0) -> None:
    """``(scale * total).backward()``; at scale 1 exactly ``total.backward()``."""
    (total if scale == 1.0 else total * scale).backward()
