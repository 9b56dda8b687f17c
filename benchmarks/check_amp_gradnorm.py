"""GradNorm's task gradient norms G_i and the trunk cosine under mixed precision, against float32.

One batch, one model (the multitask yolov5 at ``--scale``/``--imgsz``, fixed seed), the exact
code path of a training step (``Precision.autocast`` for the forward, float32 losses, the
balancer's scaled backward): G_i = w_i ||dL_i/dW|| on the last shared layer (what GradNorm
balances), the cosine of the two tasks' gradients on W and on the whole trunk. For each of
``fp32``, ``bf16`` and ``fp16`` (loss scale 2^16, unscaled by the balancer), printed
with the difference from float32: relative for G_i, absolute for a cosine (near zero, a relative
difference says nothing). A printed figure, not a test: the tolerance a study
accepts is the reader's call (the tests check the unscaling itself, exactly, in float64).

    .venv/bin/python benchmarks/check_amp_gradnorm.py                       # CPU
    .venv/bin/python benchmarks/check_amp_gradnorm.py --device cuda --imgsz 640
"""

from __future__ import annotations

import argparse

import torch
from _common import make_batch

from echomtl.balancing.base import backward_with_task_gradients, shared_parameters
from echomtl.balancing.diagnostics import gradient_similarity, trunk_diagnostics
from echomtl.losses import DEFAULT_HYP, YoloLoss, view_loss
from echomtl.models.multitask import build_model
from echomtl.training.precision import Precision

WEIGHTS = {"det": 1.0, "cls": 0.01}


def measure(mode: str, scale: str, imgsz: int, batch: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model("multitask", scale, nc=4, n_views=3).to(device).train()
    criterion = YoloLoss(model.detect, imgsz, DEFAULT_HYP)
    images, targets, views = (t.to(device) for t in make_batch(batch, imgsz, 3, seed=0))
    precision = Precision(mode, device)
    torch.manual_seed(1)  # the same dropout mask in every mode
    with precision.autocast():
        out = model(images)
    losses = {
        "det": criterion([d.float() for d in out.det], targets)[0],
        "cls": view_loss(out.view_logits.float(), views),
    }
    loss_scale = precision.scale
    trunk = trunk_diagnostics(losses, shared_parameters(model), WEIGHTS, scale=loss_scale)
    _, on_w = backward_with_task_gradients(
        losses, WEIGHTS, out.task_features, model.last_shared_weight, scale=loss_scale
    )
    n_det, n_cls, cosine_w, _ = gradient_similarity(on_w["det"], on_w["cls"])
    return {
        "G_det": WEIGHTS["det"] * n_det,
        "G_cls": WEIGHTS["cls"] * n_cls,
        "cosine_W": cosine_w,
        "cosine_trunk": trunk["cosine"],
        "loss_scale": loss_scale,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", default="s")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--modes", nargs="+", default=["fp32", "bf16", "fp16"])
    a = ap.parse_args()
    device = torch.device(a.device)
    modes = a.modes
    print(f"torch {torch.__version__}, {device}, yolov5{a.scale} {a.imgsz} px, batch {a.batch}")
    reference = measure("fp32", a.scale, a.imgsz, a.batch, device)
    keys = [k for k in reference if k != "loss_scale"]
    diff = {k: "abs.diff" if k.startswith("cosine") else "rel.diff" for k in keys}
    print(f"{'amp':<6}{'scale':>8}" + "".join(f"{k:>14}{diff[k]:>10}" for k in keys))
    for mode in modes:
        got = reference if mode == "fp32" else measure(mode, a.scale, a.imgsz, a.batch, device)
        cells = []
        for key in keys:
            ref = reference[key]
            delta = abs(got[key] - ref)
            if diff[key] == "rel.diff":
                delta = delta / abs(ref) if ref else float("nan")
            cells.append(f"{got[key]:>14.6g}{delta:>10.2e}")
        print(f"{mode:<6}{got['loss_scale']:>8.0f}" + "".join(cells))


if __name__ == "__main__":
    main()
