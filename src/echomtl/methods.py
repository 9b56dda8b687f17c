"""The one list of loss-balancing methods: name, label, kind, Jacobian need, scheduling cost.

No torch import: the experiment-table check, the rules and the report read it at parse time.
``cost`` is the training time of one step relative to fixed weights, used only to schedule the
longest runs first. Measured in the default study of 2026-12-01: GradNorm 1.07 (115 s against
108 s of training), PCGrad and IMTL-G 1.9 (205 s); the other aggregators are set like those, and
CAGrad and Nash-MTL (a solver per step, not run here) higher, as estimates.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    #: ``fixed`` (constant weights), ``weighting`` (loss weights that change during training) or
    #: ``aggregation`` (the per-task gradients of the trunk are combined by a rule, torchjd).
    kind: str
    jacobian: bool  # needs both task gradients on the whole trunk at every step
    cost: float
    reference: str  # bibliography key (paper/references.bib)
    requires: tuple[str, ...] = ()  # importable modules it needs beyond the pinned dependencies

    def missing(self) -> list[str]:
        """Modules this method needs that cannot be imported here (checked without importing)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fixed", "Fixed weights", "fixed", False, 1.0, "chen2018gradnorm"),
        Method("gradnorm", "GradNorm", "weighting", False, 1.1, "chen2018gradnorm"),
        Method(
            "uncertainty",
            "Uncertainty weighting",
            "weighting",
            False,
            1.0,
            "kendall2018uncertainty",
        ),
        Method("rlw", "Random loss weighting", "weighting", False, 1.0, "lin2022rlw"),
        Method("pcgrad", "PCGrad", "aggregation", True, 2.0, "yu2020pcgrad"),
        Method("imtl_g", "IMTL-G", "aggregation", True, 2.0, "liu2021imtl"),
        Method("mgda", "MGDA", "aggregation", True, 2.0, "sener2018mgda"),
        Method("alignedmtl", "Aligned-MTL", "aggregation", True, 2.0, "senushkin2023aligned"),
        Method("upgrad", "UPGrad", "aggregation", True, 2.0, "quinton2024jacobian"),
        Method("dualproj", "DualProj", "aggregation", True, 2.0, "quinton2024jacobian"),
        Method(
            "cagrad", "CAGrad", "aggregation", True, 2.5, "liu2021cagrad", ("cvxpy", "clarabel")
        ),
        Method("nashmtl", "Nash-MTL", "aggregation", True, 2.5, "navon2022nashmtl", ("cvxpy",)),
    )
}
JACOBIAN_METHODS = tuple(name for name, m in METHODS.items() if m.jacobian)
METHOD_LABELS = {name: m.label for name, m in METHODS.items()}


def method(name: str) -> Method:
    """The registry entry of ``name``; unknown names are an error that lists the known ones."""
    if name not in METHODS:
        raise KeyError(f"unknown balancing method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
