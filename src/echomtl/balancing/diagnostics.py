"""Gradient-interference measurements (docs/methods.md, "Diagnostics").

For the two per-task gradients ``g_det``, ``g_cls`` (UNWEIGHTED: ``g_i = dL_i/dtheta``):
- norms ``||g_det||``, ``||g_cls||``;
- cosine ``g_det . g_cls / (||g_det|| ||g_cls||)`` (negative = conflict; NaN if either is zero);
- gradient magnitude similarity ``GMS = 2 ||g_det|| ||g_cls|| / (||g_det||^2 + ||g_cls||^2)``
  (1 = equal magnitudes; NaN if both are zero).

Unweighted norms say how steep each loss is, not who moves the trunk. Every method here applies
to the shared parameters a linear combination ``u = e_det g_det + e_cls g_cls`` of the unweighted
task gradients, with ``e_i`` the EFFECTIVE weights of that step (the loss weight for fixed,
GradNorm, uncertainty and random weighting; ``w_i`` times the aggregator's combination weight for
the torchjd methods). So each row also holds:
- ``eff_weight_i`` = ``e_i``, and the weighted norms ``wnorm_i = e_i ||g_i||``;
- the update shares ``share_i = (e_i g_i) . u / ||u||^2`` (the part of the applied update along
  ``u`` that task ``i`` contributes; the two add up to 1, a task pulling against the update has a
  negative share). They follow exactly from the norms, the cosine and ``e`` (no extra pass).
- ``null_cosine``: the cosine between the detection gradients of two disjoint halves of the same
  batch (``null_reference``), i.e. what "no conflict, only sampling noise" looks like at this batch
  size; NaN on rows where it was not measured and for the ``feature`` scope, where the two halves'
  gradients live on disjoint images and their cosine says nothing.

Scopes: ``W`` (GradNorm's last shared weight) and ``feature`` (the shared feature map) are cheap
and computed every step; ``trunk`` (all shared parameters) needs two per-task backwards through
the backbone and is computed every k steps (``trunk_diagnostics``), as is the null reference.
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


def update_shares(
    n_det: float, n_cls: float, cosine: float, e_det: float, e_cls: float
) -> tuple[float, float]:
    """``(share_det, share_cls)`` of ``u = e_det g_det + e_cls g_cls`` from norms and cosine.

    ``share_i = (e_i g_i) . u / ||u||^2``; NaN when ``u`` is 0 or an input is not finite.
    """
    a, b = e_det * n_det, e_cls * n_cls
    cross = 0.0 if a == 0.0 or b == 0.0 else a * b * cosine
    total = a * a + b * b + 2.0 * cross
    if not (math.isfinite(total) and total > 0.0):
        return float("nan"), float("nan")
    return (a * a + cross) / total, (b * b + cross) / total


def diagnostics_row(
    scope: str,
    g_det: Tensor | Sequence[Tensor],
    g_cls: Tensor | Sequence[Tensor],
    weights: Mapping[str, float],
    effective: Mapping[str, float] | None = None,
) -> dict:
    """One diagnostics row (``DIAGNOSTIC_KEYS``) from two unweighted task gradients.

    ``weights``: the loss weights of the step; ``effective``: the weights the shared update
    applied to the unweighted gradients (default: ``weights``).
    """
    n_det, n_cls, cosine, gms = gradient_similarity(g_det, g_cls)
    return similarity_row(scope, n_det, n_cls, cosine, gms, weights, effective)


def similarity_row(
    scope: str,
    n_det: float,
    n_cls: float,
    cosine: float,
    gms: float,
    weights: Mapping[str, float],
    effective: Mapping[str, float] | None = None,
) -> dict:
    """The row of ``diagnostics_row`` from already computed norms and cosine."""
    nan = float("nan")
    eff = weights if effective is None else effective
    e_det, e_cls = float(eff.get("det", nan)), float(eff.get("cls", nan))
    share_det, share_cls = update_shares(n_det, n_cls, cosine, e_det, e_cls)
    return {
        "scope": scope,
        "norm_det": n_det,
        "norm_cls": n_cls,
        "cosine": cosine,
        "gms": gms,
        "weight_det": float(weights.get("det", nan)),
        "weight_cls": float(weights.get("cls", nan)),
        "eff_weight_det": e_det,
        "eff_weight_cls": e_cls,
        "wnorm_det": e_det * n_det,
        "wnorm_cls": e_cls * n_cls,
        "share_det": share_det,
        "share_cls": share_cls,
        "null_cosine": nan,
    }


def unscale(grad: Tensor, factor: float) -> Tensor:
    """``grad / factor`` in at least float32 (a float16 or bfloat16 gradient is widened first)."""
    wide = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()
    return wide if factor == 1.0 else wide / factor


def null_reference(
    half_losses: Sequence[Tensor],
    shared_params: Sequence[nn.Parameter],
    weight: Tensor | None = None,
    scale: float = 1.0,
) -> dict[str, float]:
    """Cosine between the gradients of one task's loss on two disjoint halves of a batch.

    Returns ``{"trunk": cosine over shared_params, "W": cosine on weight}`` (``W`` only when
    ``weight`` is given and is one of ``shared_params``). Two ``autograd.grad`` calls with
    ``retain_graph=True``; ``.grad`` is not touched. Call it before the balancer's backward.
    ``scale``: the mixed-precision loss scale, applied to the losses so that float16 gradients do
    not underflow (a cosine does not depend on it).
    """
    if len(half_losses) != 2:
        raise ValueError(f"null_reference needs two half-batch losses, got {len(half_losses)}")
    params = [p for p in shared_params if p.requires_grad]
    if not params:
        raise ValueError("null_reference needs at least one shared parameter")
    grads = []
    for loss in half_losses:
        root = loss if scale == 1.0 else loss * scale
        gs = torch.autograd.grad(root, params, retain_graph=True, allow_unused=True)
        grads.append(
            [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params, strict=True)]
        )
    result = {"trunk": gradient_similarity(grads[0], grads[1])[2]}
    if weight is not None:
        index = next((k for k, p in enumerate(params) if p is weight), None)
        if index is not None:
            result["W"] = gradient_similarity(grads[0][index], grads[1][index])[2]
    return result


def trunk_gradients(
    losses: Mapping[str, Tensor],
    shared_params: Sequence[nn.Parameter],
    weights: Mapping[str, float],
    scale: float = 1.0,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-task gradients over ALL shared parameters: ``(g_det, g_cls)``, unweighted, unscaled.

    Two ``torch.autograd.grad`` calls (one per task, ``retain_graph=True`` so that the balancer's
    own backward can follow on the same graph); ``.grad`` is never touched. Parameters a task does
    not reach count as zero gradient for it. Call it BEFORE the balancer's backward.

    ``scale`` (mixed precision): each loss is back-propagated as it enters the scaled backward,
    ``scale * w_i * L_i`` (no float16 value larger than the backward's own), and the gradients
    are divided by that factor in float32.
    """
    params = [p for p in shared_params if p.requires_grad]
    if not params:
        raise ValueError("trunk_diagnostics needs at least one shared parameter")
    grads = {}
    for task in ("det", "cls"):
        factor = 1.0 if scale == 1.0 else scale * (float(weights.get(task, 0.0)) or 1.0)
        root = losses[task] if factor == 1.0 else losses[task] * factor
        gs = torch.autograd.grad(root, params, retain_graph=True, allow_unused=True)
        grads[task] = [
            torch.zeros_like(p) if g is None else unscale(g, factor)
            for g, p in zip(gs, params, strict=True)
        ]
    return grads["det"], grads["cls"]


def trunk_diagnostics(
    losses: Mapping[str, Tensor],
    shared_params: Sequence[nn.Parameter],
    weights: Mapping[str, float],
    effective: Mapping[str, float] | None = None,
    scale: float = 1.0,
) -> dict:
    """Scope-``trunk`` row of ``trunk_gradients`` (the expensive one; before the backward)."""
    g_det, g_cls = trunk_gradients(losses, shared_params, weights, scale)
    return diagnostics_row("trunk", g_det, g_cls, weights, effective)
