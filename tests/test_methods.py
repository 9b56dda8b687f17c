"""The registry of methods (echomtl.methods): each name maps to its class, which builds itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from echomtl.balancing import (
    Balancer,
    FixedWeights,
    GradNorm,
    JacobianAggregation,
    RandomLossWeighting,
    UncertaintyWeighting,
    available_aggregators,
    available_methods,
    balancer_class,
    build_balancer,
)
from echomtl.methods import METHOD_LABELS, METHODS, method

from .test_training import params

CPU = torch.device("cpu")


def test_every_method_names_its_class():
    for name, m in METHODS.items():
        cls = balancer_class(name)
        assert issubclass(cls, Balancer) and cls.name == name
        assert issubclass(cls, JacobianAggregation) == (m.kind == "aggregation"), name
        assert METHOD_LABELS[name] == m.label and method(name) is m
    assert set(available_methods()) == set(METHODS) - (
        {n for n, m in METHODS.items() if m.kind == "aggregation"} - set(available_aggregators())
    )
    with pytest.raises(ValueError, match="unknown balancing method 'nope'"):
        balancer_class("nope")
    with pytest.raises(KeyError, match="unknown balancing method 'nope'"):
        method("nope")


def test_the_registry_imports_no_torch():
    """The experiment-table check and the rules read it at parse time."""
    code = "import sys, echomtl.methods; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_each_class_builds_itself_from_the_run_parameters():
    w = {"det": 1.0, "cls": 0.01}
    fixed = build_balancer(params(method="fixed"), CPU)
    assert type(fixed) is FixedWeights and fixed.weights == w and fixed.cheap_diagnostics
    det_only = build_balancer(params(method="fixed", model="det_only"), CPU)
    assert det_only.weights == {"det": 1.0} and not det_only.cheap_diagnostics
    assert not build_balancer(params(method="fixed", model="dual_backbone"), CPU).cheap_diagnostics
    gn = build_balancer(params(method="gradnorm", alpha=2.0), CPU)
    assert type(gn) is GradNorm and gn.weights == pytest.approx(w)
    assert (gn.alpha, gn.lr, gn.optimizer_name, gn.l0_window) == (2.0, 0.025, "adam", 2)
    unc = build_balancer(params(method="uncertainty"), CPU)
    assert type(unc) is UncertaintyWeighting and unc.weights == pytest.approx(w, rel=1e-6)
    assert unc.cheap_diagnostics
    rlw = build_balancer(params(method="rlw", seed=3), CPU)
    same = RandomLossWeighting(w, seed=3)
    assert (
        type(rlw) is RandomLossWeighting and rlw.weights == same.weights and rlw.cheap_diagnostics
    )
    for name in available_aggregators():
        jd = build_balancer(params(method=name), CPU)
        assert type(jd) is balancer_class(name) and jd.weights == w
        assert jd.parallel_chunk_size == 1  # rows one by one on CPU (None on GPU)
        assert jd.state_dict() == {"name": name, "weights": w}
