"""Loss balancing between detection and classification: one class per method behind ``Balancer``.

``make_balancer(method, **kwargs)`` builds one by name. The task-weight argument may be given under
any of ``weights``/``initial_weights``/``w``/``task_weights``; it goes to the right constructor
argument (fixed: start = constant weights; gradnorm: initial weights; uncertainty: start weights,
``s_i = -log w_i``; torchjd methods: fixed weights applied to the losses before aggregation).
Other keyword arguments go to the class unchanged:

- ``fixed``: ``FixedWeights(w, cheap_diagnostics=False)``
- ``gradnorm``: ``GradNorm(initial_weights, alpha, lr, optimizer="adam", l0_window=1,
  min_weight=1e-4)``
- ``uncertainty``: ``UncertaintyWeighting(initial_weights=None, initial_log_vars=None,
  tasks=("det", "cls"), cheap_diagnostics=False)``
- ``rlw``: ``RandomLossWeighting(base_weights, seed=0, cheap_diagnostics=False)``
- torchjd aggregators (``pcgrad``, ``upgrad``, ``cagrad``, ``nashmtl``, ``alignedmtl``, ``mgda``,
  ``imtl_g``, ``dualproj``; see ``available_aggregators()``): ``JacobianAggregation(name,
  task_weights=None, aggregator_kwargs=None, parallel_chunk_size=None)``
"""

from __future__ import annotations

from typing import Any

from echomtl.balancing.base import TASKS, Balancer, StepRecord
from echomtl.balancing.diagnostics import gradient_similarity, trunk_diagnostics
from echomtl.balancing.fixed import FixedWeights
from echomtl.balancing.gradnorm import GradNorm
from echomtl.balancing.jd import AGGREGATORS, JacobianAggregation, available_aggregators
from echomtl.balancing.random_weights import RandomLossWeighting
from echomtl.balancing.uncertainty import UncertaintyWeighting
from echomtl.methods import METHODS

_WEIGHT_ALIASES = ("weights", "initial_weights", "w", "task_weights")
_WEIGHT_ARGUMENT = {
    "fixed": "w",
    "gradnorm": "initial_weights",
    "uncertainty": "initial_weights",
    "rlw": "base_weights",
}
_OWN_CLASSES = ("fixed", "gradnorm", "uncertainty", "rlw")
if set(METHODS) != {*_OWN_CLASSES, *AGGREGATORS}:  # the registry and the classes must agree
    raise ImportError(
        f"echomtl.methods lists {sorted(METHODS)}, the balancers implement "
        f"{sorted({*_OWN_CLASSES, *AGGREGATORS})}"
    )


def known_methods() -> list[str]:
    """Every method name ``make_balancer`` knows (torchjd ones may still need extras)."""
    return list(METHODS)


def make_balancer(method: str, **kwargs: Any) -> Balancer:
    """Build the balancer called ``method`` (see the module docstring for the arguments)."""
    if method not in known_methods():
        available = ", ".join([*_OWN_CLASSES, *available_aggregators()])
        raise ValueError(
            f"unknown balancing method {method!r}; known: {', '.join(known_methods())} "
            f"(available in this environment: {available})"
        )
    given = [k for k in _WEIGHT_ALIASES if k in kwargs]
    if len(given) > 1:
        raise TypeError(f"task weights given twice: {given}")
    if given:
        kwargs[_WEIGHT_ARGUMENT.get(method, "task_weights")] = kwargs.pop(given[0])
    if method == "fixed":
        return FixedWeights(**kwargs)
    if method == "gradnorm":
        return GradNorm(**kwargs)
    if method == "uncertainty":
        return UncertaintyWeighting(**kwargs)
    if method == "rlw":
        return RandomLossWeighting(**kwargs)
    return JacobianAggregation(method, **kwargs)


__all__ = [
    "AGGREGATORS",
    "TASKS",
    "Balancer",
    "FixedWeights",
    "GradNorm",
    "JacobianAggregation",
    "RandomLossWeighting",
    "StepRecord",
    "UncertaintyWeighting",
    "available_aggregators",
    "gradient_similarity",
    "known_methods",
    "make_balancer",
    "trunk_diagnostics",
]
