"""Gradient-interference measurements (docs loss-balancing.md, "Measuring interference directly").

For the two per-task gradients ``g_det``, ``g_cls`` (UNWEIGHTED: ``g_i = dL_i/dtheta``):
- norms ``||g_det||``, ``||g_cls||``;
- cosine ``g_det . g_cls / (||g_det|| ||g_cls||)`` (negative = conflict; NaN if either is zero);
- gradient magnitude similarity ``GMS = 2 ||g_det|| ||g_cls|| / (||g_det||^2 + ||g_cls||^2)``
  (1 = equal magnitudes; NaN if both are zero).

The GMS of the weighted gradients ``w_i g_i`` (what the trunk actually receives) follows from the
logged columns: ``2 w_det n_det w_cls n_cls / ((w_det n_det)^2 + (w_cls n_cls)^2)``.

Scopes: ``W`` (GradNorm's last shared weight) and ``feature`` (the shared feature map) are cheap
and computed every step by GradNorm; ``trunk`` (all shared parameters) needs two per-task
backwards through the backbone and is computed every k steps (``trunk_diagnostics``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn


def _pieces(g: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [g] if isinstance(g, Tensor) else list(g)


def gradient_similarity(
    g1: Tensor | Sequence[Tensor], g2: Tensor | Sequence[Tensor]
) -> tuple[float, float, float, float]:
    """``(norm1, norm2, cosine, gms)`` of two gradients (tensors, or lists of matching pieces).

    Accumulated in float64 over the pieces (no concatenation of a whole trunk's gradient); one
    host sync. Cosine is NaN when a norm is 0; GMS is NaN when both are 0.
    """
    p1, p2 = _pieces(g1), _pieces(g2)
    if len(p1) != len(p2):
        raise ValueError(f"gradients have {len(p1)} and {len(p2)} pieces")
    if not p1:
        raise ValueError("empty gradients")
    sums = torch.zeros(3, dtype=torch.float64, device=p1[0].device)
    for a, b in zip(p1, p2, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"gradient pieces differ in shape: {tuple(a.shape)} vs {b.shape}")
        a64, b64 = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
        sums += torch.stack((a64 @ a64, b64 @ b64, a64 @ b64))
    s11, s22, s12 = sums.tolist()
    n1, n2 = math.sqrt(s11), math.sqrt(s22)
    cosine = s12 / (n1 * n2) if n1 > 0 and n2 > 0 else float("nan")
    cosine = max(-1.0, min(1.0, cosine)) if not math.isnan(cosine) else cosine
    gms = 2 * n1 * n2 / (s11 + s22) if s11 + s22 > 0 else float("nan")
    return n1, n2, cosine, gms


def diagnostics_row(
    scope: str,
    g_det: Tensor | Sequence[Tensor],
    g_cls: Tensor | Sequence[Tensor],
    weights: Mapping[str, float],
) -> dict:
    """One diagnostics row ``{scope, norm_det, norm_cls, cosine, gms, weight_det, weight_cls}``."""
    n_det, n_cls, cosine, gms = gradient_similarity(g_det, g_cls)
    return {
        "scope": scope,
        "norm_det": n_det,
        "norm_cls": n_cls,
        "cosine": cosine,
        "gms": gms,
        "weight_det": float(weights.get("det", float("nan"))),
        "weight_cls": float(weights.get("cls", float("nan"))),
    }


def trunk_diagnostics(
    losses: Mapping[str, Tensor],
    shared_params: Sequence[nn.Parameter],
    weights: Mapping[str, float],
) -> dict:
    """Scope-``trunk`` row: per-task gradients over ALL shared parameters (the expensive one).

    Two ``torch.autograd.grad`` calls (one per task, ``retain_graph=True`` so that the balancer's
    own backward can follow on the same graph); ``.grad`` is never touched. Parameters a task does
    not reach count as zero gradient for it. Call it BEFORE the balancer's backward.
    """
    params = [p for p in shared_params if p.requires_grad]
    if not params:
        raise ValueError("trunk_diagnostics needs at least one shared parameter")
    grads = {}
    for task in ("det", "cls"):
        gs = torch.autograd.grad(losses[task], params, retain_graph=True, allow_unused=True)
        grads[task] = [
            torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)
        ]
    return diagnostics_row("trunk", grads["det"], grads["cls"], weights)
