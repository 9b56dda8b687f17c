"""The registry of loss-balancing methods: name, label, kind, scheduling cost and the class.

No torch import: the experiment-table check, the rules and the report read it at parse time. The
class is named by its path under ``echomtl.balancing`` and imported only when a run builds it
(``echomtl.balancing.balancer_class``); it builds itself from the run's parameters
(``Balancer.from_params``). Adding a method means writing its class and its line here.

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
    cost: float
    #: the class, ``module.Class`` under ``echomtl.balancing``
    balancer: str
    requires: tuple[str, ...] = ()  # importable modules it needs beyond the pinned dependencies

    def missing(self) -> list[str]:
        """Modules this method needs that cannot be imported here (checked without importing)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fixed", "Fixed weights", "fixed", 1.0, "fixed.FixedWeights"),
        Method("gradnorm", "GradNorm", "weighting", 1.1, "gradnorm.GradNorm"),
        Method(
            "uncertainty",
            "Uncertainty weighting",
            "weighting",
            1.0,
            "uncertainty.UncertaintyWeighting",
        ),
        Method(
            "rlw", "Random loss weighting", "weighting", 1.0, "random_weights.RandomLossWeighting"
        ),
        Method("pcgrad", "PCGrad", "aggregation", 2.0, "jd.PCGrad"),
        Method("imtl_g", "IMTL-G", "aggregation", 2.0, "jd.IMTLG"),
        Method("mgda", "MGDA", "aggregation", 2.0, "jd.MGDA"),
        Method("alignedmtl", "Aligned-MTL", "aggregation", 2.0, "jd.AlignedMTL"),
        Method("upgrad", "UPGrad", "aggregation", 2.0, "jd.UPGrad"),
        Method("dualproj", "DualProj", "aggregation", 2.0, "jd.DualProj"),
        Method("cagrad", "CAGrad", "aggregation", 2.5, "jd.CAGrad", ("cvxpy", "clarabel")),
        Method("nashmtl", "Nash-MTL", "aggregation", 2.5, "jd.NashMTL", ("cvxpy",)),
    )
}
METHOD_LABELS = {name: m.label for name, m in METHODS.items()}


@dataclass(frozen=True)
class ModelVariant:
    """What a model variant trains: its tasks, and whether their gradients meet in one trunk.

    Torch-free (the experiment-table check reads it at parse time); the classes are in
    ``echomtl.models.multitask``.
    """

    name: str
    label: str
    tasks: tuple[str, ...]
    #: both tasks' gradients reach one shared trunk, so a balancing method has something to act on
    shares_gradients: bool


MODEL_VARIANTS: dict[str, ModelVariant] = {
    v.name: v
    for v in (
        ModelVariant("multitask", "Shared trunk", ("det", "cls"), True),
        ModelVariant("det_only", "Detection only", ("det",), False),
        ModelVariant("view_only", "View classification only", ("cls",), False),
        ModelVariant("dual_backbone", "Dual backbone", ("det", "cls"), False),
        ModelVariant("stopgrad", "Stop-gradient head", ("det", "cls"), False),
    )
}
#: the variants whose detector trains exactly as the detector alone does (no classification
#: gradient reaches it): one isolated-detector reference for detection comparisons.
ISOLATED_DETECTORS = ("det_only", "dual_backbone", "stopgrad")


def model_variant(name: str) -> ModelVariant:
    """The entry of ``name``; unknown names are an error that lists the known ones."""
    if name not in MODEL_VARIANTS:
        raise KeyError(f"unknown model variant {name!r}; known: {', '.join(MODEL_VARIANTS)}")
    return MODEL_VARIANTS[name]


def method(name: str) -> Method:
    """The registry entry of ``name``; unknown names are an error that lists the known ones."""
    if name not in METHODS:
        raise KeyError(f"unknown balancing method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]
