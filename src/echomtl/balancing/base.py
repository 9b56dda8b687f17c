"""The ``Balancer``: one shared step that calls a method's weight rule, and the measurement path.

A balancer owns the backward pass: given the per-task losses of one micro-batch it ADDS the model
gradient into the parameters' ``.grad`` (never zeroing them, so gradient accumulation over
micro-batches works) and returns a ``StepRecord`` with the task weights it used and diagnostic
rows for ``diagnostics.csv`` (docs/architecture.md, "Balancer").

``Balancer.step`` is the same for every method:

1. the weights of this step (the rule's ``step_weights``);
2. without a shared trunk (det_only, dual_backbone; or a rule that needs the task gradients on
   W and the model has no W): a plain backward of the rule's ``objective``, nothing measured;
3. with one, a ``Measurement``: the null reference on diagnostic steps, then the backward
   (``backward``: the weighted one below, which measures the ``trunk`` gradients first on the
   same graph and the ``W``/``feature`` ones with ``backward_with_task_gradients``; torchjd's
   aggregators override it with the Jacobian's);
4. the rule's ``update`` from what was measured (GradNorm's weight step, the next random draw);
5. the diagnostics rows, from the measurement.

A method is a subclass that writes its rule (``weights``, and where it differs from the default
``step_weights``, ``objective``, ``update``), its resume state and ``from_params``; it is
registered in ``echomtl.methods``.

Shared helpers:
- ``weighted_sum``: ``sum_i w_i L_i`` with Python-float weights (no device question).
- ``has_shared_trunk``: whether the output/model pair has a trunk both tasks reach (not det_only,
  not dual_backbone, both losses present).
- ``backward_with_task_gradients``: ONE backward of ``sum_i w_i L_i`` that also yields each task's
  unweighted gradient at the shared feature and on W (GradNorm's inputs, and the cheap per-step
  diagnostics), at the cost of one local backward through the last shared layer per task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from echomtl.balancing.diagnostics import (
    gradient_similarity,
    null_reference,
    similarity_row,
    trunk_gradients,
    unscale,
)
from echomtl.methods import model_variant

if TYPE_CHECKING:
    from echomtl.study import TrainParams

TASKS = ("det", "cls")
#: Columns of a diagnostics row (docs/architecture.md, ``diagnostics.csv`` less epoch/step).
DIAGNOSTIC_KEYS = (
    "scope", "norm_det", "norm_cls", "cosine", "gms", "weight_det", "weight_cls",
    "eff_weight_det", "eff_weight_cls", "wnorm_det", "wnorm_cls", "share_det", "share_cls",
    "null_cosine",
)  # fmt: skip
#: The measured scopes, in the order of the rows: GradNorm's W, the shared feature, the trunk.
SCOPES = ("W", "feature", "trunk")


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


#: ``halves()``: the detection losses of two disjoint halves of the batch (the null reference).
Halves = Callable[[], Sequence[Tensor]]


def task_weights(p: TrainParams) -> dict[str, float]:
    """The experiment's fixed weights, for the tasks its model trains (``w_det`` alone for
    det_only, ``w_cls`` alone for view_only, else both)."""
    given = {"det": p.w_det, "cls": p.w_cls}
    return {t: given[t] for t in model_variant(p.model).tasks}


class Balancer:
    """Base class: the shared step (module docstring) around a method's weight rule.

    Subclasses implement ``weights`` (the weights the next step uses) and, where they differ
    from the defaults, ``step_weights``, ``objective``, ``update`` (and ``backward`` for a
    different backward pass); ``extra_parameters`` lists learnable parameters that belong in the
    MODEL optimizer (without weight decay); ``state_dict``/``load_state_dict`` make resume exact.
    """

    name: ClassVar[str] = "base"
    #: The rule reads the per-task gradients on W (GradNorm): measured at every step, and
    #: without W the step is a plain backward.
    needs_task_gradients: ClassVar[bool] = False
    #: Measure the ``W``/``feature`` rows at every step even if the rule does not need them.
    cheap_diagnostics: bool = False
    #: The loss scale of mixed precision (fp16): what the backward multiplies by and every
    #: measured gradient is divided by. The trainer sets it before each step; 1.0 otherwise.
    grad_scale: float = 1.0

    @classmethod
    def from_params(cls, p: TrainParams, device: torch.device) -> Balancer:
        """The balancer of a run: its fixed weights, per-step rows on the multi-task model."""
        return cls(task_weights(p), cheap_diagnostics=p.model == "multitask")

    # -- the weight rule ---------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """Current task weights (those the next step uses)."""
        raise NotImplementedError

    def step_weights(self, tasks: Sequence[str]) -> dict[str, float]:
        """The loss weights of this step (the measured gradients are un-scaled by them)."""
        return self.weights

    def objective(self, losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
        """The scalar the backward differentiates: ``sum_i w_i L_i`` unless the rule says other."""
        return weighted_sum(losses, weights)

    def update(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement | None,
    ) -> dict[str, float]:
        """After the backward: the rule's own update; returns its ``info`` (none by default).

        ``measured`` is None when the step had no shared trunk (nothing was measured).
        """
        return {}

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters to optimise with the model (none by default)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (empty for stateless methods)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    # -- the shared step ---------------------------------------------------------------------
    def step(
        self,
        losses: dict[str, Tensor],
        out: Any,
        model: nn.Module,
        diagnostics_due: bool,
        halves: Halves | None = None,
    ) -> StepRecord:
        """Backward of this micro-batch's losses (adding into ``.grad``); returns the record.

        ``halves``: the null reference's half-batch losses, measured on diagnostic steps.
        """
        weights = self.step_weights(present_tasks(losses))
        measured = Measurement.of(losses, out, model, weights, self.grad_scale)
        if measured is not None and self.needs_task_gradients and measured.weight is None:
            measured = None
        effective: dict[str, float] | None = None
        info: dict[str, float] = {}
        if measured is None:
            scaled_backward(self.objective(losses, weights), self.grad_scale)
        else:
            if diagnostics_due and halves is not None:
                measured.null_reference(halves)
            effective, info = self.backward(losses, weights, measured, diagnostics_due)
        info.update(self.update(losses, weights, measured))
        rows = [] if measured is None else measured.rows(effective)
        return StepRecord(weights=weights, diagnostics=rows, info=info, effective_weights=effective)

    def backward(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement,
        diagnostics_due: bool,
    ) -> tuple[dict[str, float] | None, dict[str, float]]:
        """The backward with a shared trunk; returns ``(effective weights or None, info)``.

        One backward of the ``objective``: the ``trunk`` gradients are measured first on the same
        graph when due, and the ``W``/``feature`` ones by the backward itself when the rule needs
        them or ``cheap_diagnostics`` asks for them (and the model has W).
        """
        if diagnostics_due:
            measured.trunk()
        root = self.objective(losses, weights)
        if (self.needs_task_gradients or self.cheap_diagnostics) and measured.weight is not None:
            measured.backward(root)
        else:
            scaled_backward(root, measured.scale)
        return None, {}


class Measurement:
    """What one step measures on the shared trunk, and the diagnostics rows it gives.

    For each scope of ``SCOPES`` that was measured: the norms, cosine and GMS of the two
    UNWEIGHTED, unscaled task gradients (``gradient_similarity``, computed when measured, so no
    gradient is held); extra columns a rule adds to a scope's row (GradNorm's, on ``W``); the
    null reference's cosines (``W`` and ``trunk``). ``weights`` are the step's loss weights,
    ``scale`` the mixed-precision loss scale.
    """

    def __init__(
        self,
        losses: Mapping[str, Tensor],
        out: Any,
        model: nn.Module,
        weights: Mapping[str, float],
        scale: float,
    ) -> None:
        self.losses, self.out, self.model = losses, out, model
        self.weights, self.scale = weights, scale
        self.weight = last_shared_weight(model)
        self.similarity: dict[str, tuple[float, float, float, float]] = {}
        self.columns: dict[str, dict[str, float]] = {}
        self.null: dict[str, float] = {}

    @classmethod
    def of(
        cls,
        losses: Mapping[str, Tensor],
        out: Any,
        model: nn.Module,
        weights: Mapping[str, float],
        scale: float,
    ) -> Measurement | None:
        """A measurement of this step, or None without a shared trunk."""
        return cls(losses, out, model, weights, scale) if has_shared_trunk(losses, out) else None

    def measure(
        self, scope: str, g_det: Tensor | Sequence[Tensor], g_cls: Tensor | Sequence[Tensor]
    ) -> None:
        """Record the two unweighted task gradients of ``scope``."""
        self.similarity[scope] = gradient_similarity(g_det, g_cls)

    def null_reference(self, halves: Halves) -> None:
        """The null reference on the trunk and W (before the backward, on the retained graph)."""
        params = shared_parameters(self.model)
        if params:
            self.null = null_reference(halves(), params, self.weight, scale=self.scale)

    def trunk(self) -> None:
        """The ``trunk`` scope: two per-task ``autograd.grad`` before the backward."""
        params = shared_parameters(self.model)
        if params:
            self.measure("trunk", *trunk_gradients(self.losses, params, self.weights, self.scale))

    def backward(self, root: Tensor) -> None:
        """The backward of ``root`` that also measures the ``W`` and ``feature`` scopes."""
        feature, on_w = backward_with_task_gradients(
            self.losses, self.weights, self.out.task_features, self.weight, root, self.scale
        )
        self.measure("W", on_w["det"], on_w["cls"])
        self.measure("feature", feature["det"], feature["cls"])

    def rows(self, effective: Mapping[str, float] | None = None) -> list[dict]:
        """One row per measured scope (``DIAGNOSTIC_KEYS`` and the scope's extra columns)."""
        rows = []
        for scope in SCOPES:
            if scope not in self.similarity:
                continue
            row = similarity_row(scope, *self.similarity[scope], self.weights, effective)
            row.update(self.columns.get(scope, {}))
            if scope in self.null:
                row["null_cosine"] = self.null[scope]
            rows.append(row)
        return rows


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


def scaled_backward(total: Tensor, scale: float = 1.0) -> None:
    """``(scale * total).backward()``; at scale 1 exactly ``total.backward()``."""
    (total if scale == 1.0 else total * scale).backward()
