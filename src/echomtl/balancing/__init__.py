"""Loss balancing between detection and classification: one class per method behind ``Balancer``.

The registry is ``echomtl.methods.METHODS``: each method names its class here, and the class
builds itself from the run's parameters (``Balancer.from_params``): ``build_balancer(params,
device)`` is what the trainer calls. ``make_balancer(method, *, weights=..., **kwargs)`` builds one
by name from constructor arguments (tests, benchmarks): the task weights may be given under any
of ``weights``/``initial_weights``/``w``/``task_weights``/``base_weights`` and go to the first
argument of every constructor (fixed: the constant weights; gradnorm: initial weights;
uncertainty: start weights, ``s_i = -log w_i``; rlw: base weights; torchjd methods: fixed weights
applied to the losses before aggregation). Other keyword arguments go to the class unchanged:

- ``fixed``: ``FixedWeights(w, cheap_diagnostics=False)``
- ``gradnorm``: ``GradNorm(initial_weights, alpha, lr, optimizer="adam", l0_window=1,
  min_weight=1e-4)``
- ``uncertainty``: ``UncertaintyWeighting(initial_weights=None, initial_log_vars=None,
  tasks=("det", "cls"), cheap_diagnostics=False)``
- ``rlw``: ``RandomLossWeighting(base_weights, seed=0, cheap_diagnostics=False)``
- torchjd aggregators (``pcgrad``, ``upgrad``, ``cagrad``, ``nashmtl``, ``alignedmtl``, ``mgda``,
  ``imtl_g``, ``dualproj``; see ``available_aggregators()``): ``PCGrad(task_weights=None,
  aggregator_kwargs=None, parallel_chunk_size=None)`` and so on (``JacobianAggregation``)
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

from echomtl.balancing.base import TASKS, Balancer, StepRecord
from echomtl.balancing.diagnostics import gradient_similarity, trunk_diagnostics
from echomtl.balancing.fixed import FixedWeights
from echomtl.balancing.gradnorm import GradNorm
from echomtl.balancing.jd import JacobianAggregation
from echomtl.balancing.random_weights import RandomLossWeighting
from echomtl.balancing.uncertainty import UncertaintyWeighting
from echomtl.methods import METHODS

if TYPE_CHECKING:
    import torch

    from echomtl.study import TrainParams

_WEIGHT_ALIASES = ("weights", "initial_weights", "w", "task_weights", "base_weights")


def known_methods() -> list[str]:
    """Every method name the registry knows (torchjd ones may still need extras)."""
    return list(METHODS)


def balancer_class(method: str) -> type[Balancer]:
    """The class the registry names for ``method``."""
    if method not in METHODS:
        raise ValueError(
            f"unknown balancing method {method!r}; known: {', '.join(known_methods())} "
            f"(available in this environment: {', '.join(available_methods())})"
        )
    module, _, name = METHODS[method].balancer.rpartition(".")
    cls = getattr(importlib.import_module(f"echomtl.balancing.{module}"), name)
    if cls.name != method:
        raise TypeError(f"echomtl.methods names {cls.__name__} for {method!r}, not {cls.name!r}")
    return cls


def build_balancer(params: TrainParams, device: torch.device) -> Balancer:
    """The balancer of a run (``params.method``), built by its class from the run's parameters."""
    return balancer_class(params.method).from_params(params, device)


def make_balancer(method: str, **kwargs: Any) -> Balancer:
    """Build ``method`` from constructor arguments (see the module docstring)."""
    cls = balancer_class(method)
    given = [k for k in _WEIGHT_ALIASES if k in kwargs]
    if len(given) > 1:
        raise TypeError(f"task weights given twice: {given}")
    weights = [kwargs.pop(given[0])] if given else []
    return cls(*weights, **kwargs)


@cache
def available_aggregators() -> tuple[str, ...]:
    """torchjd methods whose aggregator can be built here (optional extras installed)."""
    classes = {name: balancer_class(name) for name in METHODS}
    return tuple(
        name
        for name, cls in classes.items()
        if issubclass(cls, JacobianAggregation) and cls.available()
    )


def available_methods() -> list[str]:
    """Every method that can run in this environment."""
    jd = available_aggregators()
    return [n for n in METHODS if not issubclass(balancer_class(n), JacobianAggregation) or n in jd]


__all__ = [
    "TASKS",
    "Balancer",
    "FixedWeights",
    "GradNorm",
    "JacobianAggregation",
    "RandomLossWeighting",
    "StepRecord",
    "UncertaintyWeighting",
    "available_aggregators",
    "available_methods",
    "balancer_class",
    "build_balancer",
    "gradient_similarity",
    "known_methods",
    "make_balancer",
    "trunk_diagnostics",
]
