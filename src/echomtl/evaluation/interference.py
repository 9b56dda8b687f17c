"""Gradient interference measured with power: each task's gradient on the shared trunk,
accumulated over a fixed set of training images, at a few points of training.

The per-step diagnostics (``echomtl.balancing.diagnostics``) see one batch at a time: their
null reference, the cosine between two halves of one batch of the same task, spreads so widely
that a cosine between the tasks cannot be told from noise. This job instead takes the weights a
shared-trunk run saved when warm-up ended, at half of its schedule and at its end
(``training.trainer.SNAPSHOT_POINTS``) and, at each point, measures on ``n_images`` training
images (a seeded draw, the same for every run and point):

- each task's gradient on the shared trunk, per batch of the run's batch size (the model in
  training mode, as a step sees it) and accumulated: ``G_t`` = the mean over batches;
- the **task cosine** ``cos(G_det, G_cls)`` and the **weighted-norm ratio**
  ``e_det ||G_det|| / (e_cls ||G_cls||)`` with the run's effective weights at that point;
- the **halves**: each task's gradient accumulated separately over two disjoint halves of the
  set, and their cosine. Near 1, the task's accumulated direction is reproducible on this many
  images; near 0, it is noise, and no cosine between the tasks can mean anything;
- the **null band** (:func:`null_band`): the 95% range the task cosine takes when the true one
  is 0 and only the scatter of the batches remains (a t interval of the classification
  gradient's component along ``G_det``): what sampling noise alone gives at this number of
  images. A task cosine below the band is a conflict the measurement can see, one above it an
  alignment; inside, the measurement shows neither (:func:`interference_word`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from echomtl.atomic import PathLike, write_json
from echomtl.evaluation.vocabulary import INTERFERENCE_WORDS

__all__ = [
    "INTERFERENCE_WORDS",
    "null_band",
    "interference_word",
    "summarise_gradients",
    "measure_snapshots",
]


def _cos(a: Tensor, b: Tensor) -> float:
    na, nb = float(a.norm()), float(b.norm())
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else math.nan


def null_band(det_batches: Tensor, cls_batches: Tensor) -> tuple[float, float]:
    """95% range of the task cosine when the true one is 0 and only batch-to-batch scatter
    remains: ``+- t(0.975, B - 1) * se / ||G_cls||``, where ``se`` is the standard error of the
    mean of the batches' classification gradients projected on the accumulated detection
    direction (a one-sample t interval of that projection, turned into a cosine).

    ``det_batches``, ``cls_batches``: ``[B, D]``. The detection direction is taken as known: the
    halves (:func:`summarise_gradients`) say whether it is reproducible on this many images.
    """
    from scipy.stats import t as student_t

    x, y = det_batches.double(), cls_batches.double()
    g_det, g_cls = x.mean(0), y.mean(0)
    if float(g_det.norm()) == 0 or float(g_cls.norm()) == 0:
        return math.nan, math.nan
    along = (y @ (g_det / g_det.norm())).numpy()  # each batch's component along G_det
    n = len(along)
    se = float(np.std(along, ddof=1)) / math.sqrt(n)
    half_width = float(student_t.ppf(0.975, n - 1)) * se / float(g_cls.norm())
    return -half_width, half_width


def interference_word(cosine: float, band: tuple[float, float]) -> str | None:
    """``conflict`` below the null band, ``alignment`` above it, else inside it; None when the
    cosine or the band is undefined (a zero gradient)."""
    low, high = band
    if any(math.isnan(x) for x in (cosine, low, high)):
        return None
    if cosine < low:
        return INTERFERENCE_WORDS[0]
    if cosine > high:
        return INTERFERENCE_WORDS[1]
    return INTERFERENCE_WORDS[2]


def summarise_gradients(
    det_batches: Tensor,
    cls_batches: Tensor,
    weights: Mapping[str, float],
) -> dict[str, Any]:
    """Everything the module docstring lists, from the per-batch gradients ``[B, D]`` of each
    task (equal batches, so the accumulated gradient is their mean)."""
    if det_batches.shape != cls_batches.shape or det_batches.shape[0] < 2:
        raise ValueError(
            f"need the same two or more batches of both tasks, got {tuple(det_batches.shape)} "
            f"and {tuple(cls_batches.shape)}"
        )
    x, y = det_batches.double(), cls_batches.double()
    g_det, g_cls = x.mean(0), y.mean(0)
    half = x.shape[0] // 2
    cosine = _cos(g_det, g_cls)
    band = null_band(det_batches, cls_batches)
    e_det, e_cls = float(weights["det"]), float(weights["cls"])
    norm_det, norm_cls = float(g_det.norm()), float(g_cls.norm())
    return {
        "cosine": cosine,
        "null_low": band[0],
        "null_high": band[1],
        "reading": interference_word(cosine, band),
        "norm_det": norm_det,
        "norm_cls": norm_cls,
        "weight_det": e_det,
        "weight_cls": e_cls,
        "weighted_norm_ratio": (
            e_det * norm_det / (e_cls * norm_cls) if e_cls * norm_cls > 0 else math.nan
        ),
        "halves_det": _cos(x[:half].mean(0), x[half:].mean(0)),
        "halves_cls": _cos(y[:half].mean(0), y[half:].mean(0)),
        "n_batches": int(x.shape[0]),
    }


def task_gradients(
    model: torch.nn.Module,
    criterion: Any,
    batches: Sequence[tuple[Tensor, Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    """Each batch's unweighted detection and view-loss gradients on the shared parameters,
    flattened: two ``[B, D]`` float32 tensors."""
    from echomtl.losses import view_loss

    shared = [p for p in model.shared_parameters() if p.requires_grad]
    det_rows, cls_rows = [], []
    for images, targets, views in batches:
        out = model(images)
        loss_det, _ = criterion([d.float() for d in out.det], targets)
        loss_cls = view_loss(out.view_logits.float(), views)
        g_det = torch.autograd.grad(loss_det, shared, retain_graph=True, allow_unused=True)
        g_cls = torch.autograd.grad(loss_cls, shared, allow_unused=True)
        det_rows.append(_flat(g_det, shared))
        cls_rows.append(_flat(g_cls, shared))
    return torch.stack(det_rows), torch.stack(cls_rows)


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    return torch.cat([
        (torch.zeros_like(p) if g is None else g).detach().reshape(-1).float().cpu()
        for g, p in zip(grads, params, strict=True)
    ])  # fmt: skip


def image_set(n_train: int, n_images: int, seed: int = 0) -> np.ndarray:
    """The fixed set: ``min(n_images, n_train)`` training images of a seeded permutation."""
    return np.sort(np.random.default_rng(seed).permutation(n_train)[: min(n_images, n_train)])


def measure_snapshots(
    snapshots_path: PathLike,
    cache_path: PathLike,
    out_json: PathLike,
    experiment: str,
    n_images: int = 256,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """The job: every snapshot point of one run, measured on the fixed image set."""
    from echomtl.data.dataset import CachedDataset, collate
    from echomtl.losses import YoloLoss
    from echomtl.models.multitask import build_model

    saved = torch.load(Path(snapshots_path), map_location="cpu", weights_only=True)
    desc, params = saved["model"], saved["params"]
    if not saved["points"]:
        raise ValueError(f"{snapshots_path}: the run saved no snapshot (no shared trunk?)")
    dataset = CachedDataset(cache_path)
    chosen = image_set(len(dataset), n_images, seed)
    # Batches of the run's own size (its BatchNorm statistics as training saw them); a training
    # set too small for two such batches (a tiny study) is cut in two halves instead, and the
    # batch size used is recorded and printed with the measurement.
    batch_size = min(int(params["batch_size"]), len(chosen) // 2)
    if batch_size < 1:
        raise ValueError(
            f"{cache_path}: {len(chosen)} training image(s); the null band needs at least two"
        )
    n_batches = len(chosen) // batch_size
    chosen = chosen[: n_batches * batch_size]  # whole batches: the mean of batch means
    batches = []
    for b in range(n_batches):
        images, targets, views, _ = collate([dataset[int(i)] for i in chosen[b::n_batches]])
        batches.append((images.to(device), targets.to(device), views.to(device)))
    points = {}
    for point, snap in saved["points"].items():
        model = build_model(
            desc["variant"], desc["scale"], desc["nc"], desc["n_views"], desc["attach"],
            desc["dropout"],
        )  # fmt: skip
        model.load_state_dict(snap["state_dict"])
        model.to(device).train()  # as a training step sees it (batch statistics, dropout)
        criterion = YoloLoss(model.detect, int(params["imgsz"]), dict(params["hyp"]))
        torch.manual_seed(seed)
        det, cls = task_gradients(model, criterion, batches)
        points[point] = {
            "step": int(snap["step"]),
            **summarise_gradients(det, cls, snap["weights"]),
        }
    result = {
        "experiment": experiment,
        "seed": int(params["seed"]),
        "n_images": int(len(chosen)),
        "batch_size": batch_size,
        "points": points,
    }
    write_json(out_json, result)
    return result
