"""Gradient-surgery / multi-objective aggregators from torchjd (MIT), not re-implemented here.

``torchjd.autojac.mtl_backward`` (0.18) takes the task losses and the shared feature tensors: it
accumulates each loss's gradient into its own task-specific parameters' ``.grad`` and the
Jacobian (one row per task) into the shared parameters' ``.jac``; ``torchjd.autojac.jac_to_grad``
then aggregates those rows with the chosen aggregator and ADDS the result into ``.grad``
(``param.grad += ...``), so micro-batch accumulation works. Features that only one task reads
(attach 9: layers 4 and 6 feed only detection) are fine: torchjd differentiates with
``allow_unused`` and uses a zero row there.

Nested features. ``mtl_backward`` is only correct when no feature is computed from another one:
it takes each task's TOTAL gradient at every feature (``autograd.grad``) and back-propagates all
of them together, so a path through two features is counted twice (with ``retain_graph=False``
it fails instead: "Trying to backward through the graph a second time"). The YOLOv5 trunk's
outputs 4, 6, 9 are nested (9 is computed from 6, 6 from 4). So ``step`` checks the features:
- not nested (e.g. the model hands the detection branch aliases ``x.view_as(x)`` of layers 4
  and 6, as it does for 9): ``mtl_backward`` on them;
- nested: ``torchjd.autojac.backward`` of the two weighted losses with respect to every
  parameter (the full Jacobian, both rows at once), then ``jac_to_grad`` on the shared
  parameters (``model.shared_parameters()``) and the plain sum of the two rows (the gradient of
  ``sum_i w_i L_i``) on the others. Same result, about one extra backward through the heads.

Decisions:
- The aggregator sees ``w_i L_i`` with the experiment's fixed weights (seed: 1.0 / 0.01), not the
  raw losses: the YOLOv5 detection loss is multiplied by the batch size and would otherwise dwarf
  the cross-entropy in every row-norm-sensitive rule, and with these weights all methods start
  from the same objective. Scale-invariant rules (PCGrad's projections, IMTL-G, Aligned-MTL's
  balancing) are affected only through the task-specific parameters, which receive ``w_i dL_i``.
- ``StepRecord.weights`` are those fixed weights; the aggregator's own combination weights ``a_i``
  of the rows are in ``StepRecord.info`` as ``agg_weight_det``/``agg_weight_cls``, and the
  effective weights on the unweighted task gradients, ``w_i a_i``, in
  ``StepRecord.effective_weights`` (every aggregator kept here is a weighted one: its update is
  ``sum_i a_i w_i g_i``; one that returns no weights is refused rather than logged blind).
- The ``trunk`` diagnostics row (when due) is read from the Jacobian torchjd computes anyway
  (rows divided by ``w_i``): the same quantity as ``trunk_diagnostics``, without two more
  backwards. Its parameters are the leaves torchjd finds under the shared features, which are
  the model's shared parameters.
- Without a shared trunk (dual_backbone) or with one task (det_only) the step is a plain weighted
  backward.
- torchjd's PCGrad draws ``torch.randperm`` (the global RNG) at each aggregation.
- Speed: the trainer passes ``parallel_chunk_size=1`` on CPU (the two Jacobian rows one after the
  other; ``torch.vmap`` over the convolution backward is slower there than a second backward)
  and ``None`` (both rows at once) on GPU.

Aggregators by name; those needing optional extras that are missing raise ImportError with
torchjd's install hint (``available_aggregators()`` lists those that work here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import torch
from torch import Tensor, nn
from torchjd import aggregation as agg
from torchjd.autojac import backward as jac_backward
from torchjd.autojac import jac_to_grad, mtl_backward

from echomtl.balancing.base import (
    TASKS,
    Balancer,
    StepRecord,
    has_shared_trunk,
    present_tasks,
    scaled_backward,
    shared_parameters,
    weighted_sum,
)
from echomtl.balancing.diagnostics import diagnostics_row, unscale

#: name -> (factory(n_tasks, **kwargs), optional extra that torchjd needs for it)
AGGREGATORS: dict[str, tuple[Callable[..., agg.Aggregator], str | None]] = {
    "pcgrad": (lambda n, **kw: agg.PCGrad(**kw), None),
    "upgrad": (lambda n, **kw: agg.UPGrad(**kw), "torchjd[quadprog_projector]"),
    "cagrad": (lambda n, **kw: agg.CAGrad(**{"c": 0.5, **kw}), "torchjd[cagrad]"),
    "nashmtl": (lambda n, **kw: agg.NashMTL(n_tasks=n, **kw), "torchjd[nash_mtl]"),
    "alignedmtl": (lambda n, **kw: agg.AlignedMTL(**kw), None),
    "mgda": (lambda n, **kw: agg.MGDA(**kw), None),
    "imtl_g": (lambda n, **kw: agg.IMTLG(**kw), None),
    "dualproj": (lambda n, **kw: agg.DualProj(**kw), "torchjd[quadprog_projector]"),
}


def build_aggregator(name: str, n_tasks: int = 2, **kwargs: Any) -> agg.Aggregator:
    """The torchjd aggregator called ``name`` (see ``AGGREGATORS``)."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown torchjd aggregator {name!r}; known: {sorted(AGGREGATORS)}")
    factory, extra = AGGREGATORS[name]
    try:
        return factory(n_tasks, **kwargs)
    except ImportError as exc:
        hint = f" (pip install '{extra}')" if extra else ""
        raise ImportError(f"aggregator {name!r} is not available here{hint}: {exc}") from exc


@cache
def available_aggregators() -> tuple[str, ...]:
    """Names whose aggregator can be built in this environment (optional extras installed)."""
    names = []
    for name in AGGREGATORS:
        try:
            build_aggregator(name)
        except ImportError:
            continue
        names.append(name)
    return tuple(names)


def features_are_nested(features: list[Tensor]) -> bool:
    """Whether some feature is computed from another one (walks the autograd graph)."""
    nodes = {f.grad_fn for f in features if f.grad_fn is not None}
    for f in features:
        if f.grad_fn is None:
            continue
        stack = [n for n, _ in f.grad_fn.next_functions if n is not None]
        seen = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            if node in nodes:
                return True
            seen.add(node)
            stack.extend(n for n, _ in node.next_functions if n is not None)
    return False


class JacobianAggregation(Balancer):
    """Jacobian descent on the shared trunk with a torchjd aggregator.

    Args:
        name: one of ``AGGREGATORS`` (pcgrad, upgrad, cagrad, nashmtl, alignedmtl, mgda, imtl_g,
            dualproj), subject to ``available_aggregators()``.
        task_weights: fixed ``w_i`` applied to the losses before aggregation (default 1.0 each;
            the trainer passes the experiment's ``w_det``/``w_cls``).
        aggregator_kwargs: passed to the torchjd aggregator (e.g. ``{"c": 0.4}`` for CAGrad).
        parallel_chunk_size: torchjd's ``parallel_chunk_size`` (None: both rows at once via
            ``torch.vmap``; 1 avoids vmap).
    """

    def __init__(
        self,
        name: str,
        task_weights: Mapping[str, float] | None = None,
        aggregator_kwargs: Mapping[str, Any] | None = None,
        parallel_chunk_size: int | None = None,
    ) -> None:
        weights = dict(task_weights) if task_weights is not None else dict.fromkeys(TASKS, 1.0)
        unknown = sorted(set(weights) - set(TASKS))
        if unknown or "det" not in weights:
            raise ValueError(f"task_weights must have 'det' and keys in {TASKS}, got {weights}")
        if any(not float(v) > 0 for v in weights.values()):
            raise ValueError(f"task weights must be > 0, got {weights}")
        self.name = name
        self._w = {t: float(weights[t]) for t in TASKS if t in weights}
        self.aggregator = build_aggregator(name, len(TASKS), **dict(aggregator_kwargs or {}))
        self.parallel_chunk_size = parallel_chunk_size

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def state_dict(self) -> dict[str, Any]:
        # Stateful aggregators (Nash-MTL's cached weights) restart their state on resume.
        return {"name": self.name, "weights": dict(self._w)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"state is for {state['name']!r}, balancer is {self.name!r}")

    def step(
        self, losses: dict[str, Tensor], out: Any, model: nn.Module, diagnostics_due: bool
    ) -> StepRecord:
        """``mtl_backward`` + ``jac_to_grad`` (adding into ``.grad``); no trunk: plain backward."""
        present_tasks(losses)
        used = self.weights
        scale = self.grad_scale
        if not has_shared_trunk(losses, out):
            scaled_backward(weighted_sum(losses, used), scale)
            return StepRecord(weights=used)

        # mixed precision: the Jacobian rows are of the scaled losses (the aggregators are
        # positively homogeneous, so .grad is scaled and the optimizer's scaler undoes it); the
        # rows the diagnostics read are divided by the scale with the weight
        tensors = [(used[t] * scale) * losses[t] for t in TASKS]
        features = list(out.shared_features)
        rows: list[dict] = []
        info: dict[str, float] = {}
        effective: dict[str, float] | None = None
        try:
            if features_are_nested(features):
                shared = self._full_jacobian(tensors, model)
            else:
                mtl_backward(
                    tensors, features=features, parallel_chunk_size=self.parallel_chunk_size
                )
                shared = [p for p in model.parameters() if hasattr(p, "jac")]
            if not shared:
                raise RuntimeError("no shared parameter received a Jacobian")
            w_param = getattr(model, "last_shared_weight", None)
            w_rows = None
            if w_param is not None and hasattr(w_param, "jac"):
                # GradNorm's W, every step like the other methods: free, the rows are here.
                w_rows = (
                    unscale(w_param.jac[0], used["det"] * scale),
                    unscale(w_param.jac[1], used["cls"] * scale),
                )
            agg_weights = jac_to_grad(shared, self.aggregator, retain_jac=diagnostics_due)
            if not isinstance(agg_weights, Tensor):
                raise RuntimeError(
                    f"aggregator {self.name!r} returned no combination weights: its effective "
                    "task weights cannot be logged (use a weighted torchjd aggregator)"
                )
            values = agg_weights.detach().to(torch.float64).tolist()
            info = {f"agg_weight_{t}": v for t, v in zip(TASKS, values, strict=True)}
            effective = {t: used[t] * v for t, v in zip(TASKS, values, strict=True)}
            if w_rows is not None:
                rows.append(diagnostics_row("W", *w_rows, used, effective))
            if diagnostics_due:
                rows_det = [unscale(p.jac[0], used["det"] * scale) for p in shared]
                rows_cls = [unscale(p.jac[1], used["cls"] * scale) for p in shared]
                rows.append(diagnostics_row("trunk", rows_det, rows_cls, used, effective))
        finally:
            for p in model.parameters():
                if hasattr(p, "jac"):
                    del p.jac
        return StepRecord(weights=used, diagnostics=rows, info=info, effective_weights=effective)

    def _full_jacobian(self, tensors: list[Tensor], model: nn.Module) -> list[nn.Parameter]:
        """Nested features: Jacobian w.r.t. every parameter; non-shared ones get the row sum.

        Returns the shared parameters, whose ``.jac`` is left for ``jac_to_grad``.
        """
        shared = shared_parameters(model)
        if not shared:
            raise RuntimeError("the model exposes shared features but no shared parameters")
        params = [p for p in model.parameters() if p.requires_grad]
        jac_backward(tensors, inputs=params, parallel_chunk_size=self.parallel_chunk_size)
        shared_ids = {id(p) for p in shared}
        for p in params:
            if id(p) in shared_ids or not hasattr(p, "jac"):
                continue
            g = p.jac.sum(0)
            del p.jac
            if p.grad is None:
                p.grad = g
            else:
                p.grad += g
        return shared
