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
- Speed: ``from_params`` sets ``parallel_chunk_size=1`` on CPU (the two Jacobian rows one after
  the other; ``torch.vmap`` over the convolution backward is slower there than a second
  backward) and ``None`` (both rows at once) on GPU.

One small class per aggregator (registered in ``echomtl.methods``), naming its torchjd class and
default arguments; those needing optional extras that are missing raise ImportError with
torchjd's install hint (``echomtl.balancing.available_aggregators()`` lists those that work here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torchjd import aggregation as agg
from torchjd.autojac import backward as jac_backward
from torchjd.autojac import jac_to_grad, mtl_backward

from echomtl.balancing.base import TASKS, Balancer, Measurement, shared_parameters, task_weights
from echomtl.balancing.diagnostics import unscale

if TYPE_CHECKING:
    from echomtl.study import TrainParams


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
    """Jacobian descent on the shared trunk with a torchjd aggregator (one subclass each).

    Args:
        task_weights: fixed ``w_i`` applied to the losses before aggregation (default 1.0 each;
            ``from_params`` passes the experiment's ``w_det``/``w_cls``).
        aggregator_kwargs: passed to the torchjd aggregator (e.g. ``{"c": 0.4}`` for CAGrad).
        parallel_chunk_size: torchjd's ``parallel_chunk_size`` (None: both rows at once via
            ``torch.vmap``; 1 avoids vmap).
    """

    #: torchjd's optional extra the aggregator needs (the install hint when it is missing)
    extra: ClassVar[str | None] = None

    def __init__(
        self,
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
        self._w = {t: float(weights[t]) for t in TASKS if t in weights}
        self.aggregator = self.build_aggregator(**dict(aggregator_kwargs or {}))
        self.parallel_chunk_size = parallel_chunk_size

    @classmethod
    def from_params(cls, p: TrainParams, device: torch.device) -> JacobianAggregation:
        """Fixed weights ``w_det``/``w_cls``; the Jacobian's rows one by one on CPU.

        Rows one after the other on CPU, where vmap over the convolution backward costs more than
        a second backward (PCGrad step 2.2x fixed weights with vmap, 1.7x without, yolov5n 128 px,
        1 thread, benchmarks/README.md); at once on GPU.
        """
        return cls(task_weights(p), parallel_chunk_size=1 if device.type == "cpu" else None)

    #: the torchjd aggregator's class (``torchjd.aggregation``) and the arguments it gets
    #: unless given (``aggregator_kwargs``)
    torchjd_class: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def make_aggregator(cls, **kwargs: Any) -> agg.Aggregator:
        """The torchjd aggregator the subclass names."""
        return getattr(agg, cls.torchjd_class)(**{**cls.defaults, **kwargs})

    @classmethod
    def build_aggregator(cls, **kwargs: Any) -> agg.Aggregator:
        """``make_aggregator``, with the install hint when an optional extra is missing."""
        try:
            return cls.make_aggregator(**kwargs)
        except ImportError as exc:
            hint = f" (pip install '{cls.extra}')" if cls.extra else ""
            message = f"aggregator {cls.name!r} is not available here{hint}: {exc}"
            raise ImportError(message) from exc

    @classmethod
    def available(cls) -> bool:
        """Whether the aggregator can be built in this environment (optional extras installed)."""
        try:
            cls.build_aggregator()
        except ImportError:
            return False
        return True

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def state_dict(self) -> dict[str, Any]:
        # Stateful aggregators (Nash-MTL's cached weights) restart their state on resume.
        return {"name": self.name, "weights": dict(self._w)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"state is for {state['name']!r}, balancer is {self.name!r}")

    def backward(
        self,
        losses: Mapping[str, Tensor],
        weights: Mapping[str, float],
        measured: Measurement,
        diagnostics_due: bool,
    ) -> tuple[dict[str, float] | None, dict[str, float]]:
        """``mtl_backward`` + ``jac_to_grad`` (adding into ``.grad``); W and trunk from the rows."""
        # mixed precision: the Jacobian rows are of the scaled losses (the aggregators are
        # positively homogeneous, so .grad is scaled and the optimizer's scaler undoes it); the
        # rows the diagnostics read are divided by the scale with the weight
        scale, model = measured.scale, measured.model
        tensors = [(weights[t] * scale) * losses[t] for t in TASKS]
        features = list(measured.out.shared_features)
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
                    unscale(w_param.jac[0], weights["det"] * scale),
                    unscale(w_param.jac[1], weights["cls"] * scale),
                )
            agg_weights = jac_to_grad(shared, self.aggregator, retain_jac=diagnostics_due)
            if not isinstance(agg_weights, Tensor):
                raise RuntimeError(
                    f"aggregator {self.name!r} returned no combination weights: its effective "
                    "task weights cannot be logged (use a weighted torchjd aggregator)"
                )
            values = agg_weights.detach().to(torch.float64).tolist()
            info = {f"agg_weight_{t}": v for t, v in zip(TASKS, values, strict=True)}
            effective = {t: weights[t] * v for t, v in zip(TASKS, values, strict=True)}
            if w_rows is not None:
                measured.measure("W", *w_rows)
            if diagnostics_due:
                rows_det = [unscale(p.jac[0], weights["det"] * scale) for p in shared]
                rows_cls = [unscale(p.jac[1], weights["cls"] * scale) for p in shared]
                measured.measure("trunk", rows_det, rows_cls)
        finally:
            for p in model.parameters():
                if hasattr(p, "jac"):
                    del p.jac
        return effective, info

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


class PCGrad(JacobianAggregation):
    """Yu et al. 2020; draws ``torch.randperm`` (the global RNG) at each aggregation."""

    name, torchjd_class = "pcgrad", "PCGrad"


class UPGrad(JacobianAggregation):
    """Quinton and Rey 2024."""

    name, torchjd_class = "upgrad", "UPGrad"
    extra = "torchjd[quadprog_projector]"


class CAGrad(JacobianAggregation):
    """Liu et al. 2021, with ``c = 0.5`` unless given."""

    name, torchjd_class = "cagrad", "CAGrad"
    extra = "torchjd[cagrad]"
    defaults = {"c": 0.5}


class NashMTL(JacobianAggregation):
    """Navon et al. 2022."""

    name, torchjd_class = "nashmtl", "NashMTL"
    extra = "torchjd[nash_mtl]"
    defaults = {"n_tasks": len(TASKS)}


class AlignedMTL(JacobianAggregation):
    """Senushkin et al. 2023."""

    name, torchjd_class = "alignedmtl", "AlignedMTL"


class MGDA(JacobianAggregation):
    """Sener and Koltun 2018."""

    name, torchjd_class = "mgda", "MGDA"


class IMTLG(JacobianAggregation):
    """Liu et al. 2021 (IMTL-G)."""

    name, torchjd_class = "imtl_g", "IMTLG"


class DualProj(JacobianAggregation):
    """Quinton and Rey 2024."""

    name, torchjd_class = "dualproj", "DualProj"
    extra = "torchjd[quadprog_projector]"
