"""Training-step time of each loss-balancing method, relative to fixed weights (CPU).

One step = zero_grad + forward + YoloLoss + view loss + ``balancer.step`` + SGD step, on a batch of
random images with a few random boxes each. Methods run round-robin (one step of each in turn) so
that a slow phase of a shared machine hits them all alike. Reported: the median step time (robust
to noise) and the mean (which includes the amortised cost of every-k-steps trunk diagnostics).
The bar (docs loss-balancing.md): GradNorm without trunk diagnostics <= 1.10x fixed.

    .venv/bin/python benchmarks/bench_balancing.py                     # n@128 b16, s@320 b8
    .venv/bin/python benchmarks/bench_balancing.py --configs n:128:16 --iters 20
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from _common import make_batch
from torch import nn

from echomtl.balancing import available_aggregators, make_balancer

W0 = {"det": 1.0, "cls": 0.01}
GRADNORM = {"alpha": 1.5, "lr": 0.025, "optimizer": "adam", "l0_window": 10, "min_weight": 1e-4}

#: label -> (method, kwargs, diagnostics_every or 0 for never)
METHODS: dict[str, tuple[str, dict, int]] = {
    "fixed": ("fixed", {}, 0),
    "fixed+cheap_diag": ("fixed", {"cheap_diagnostics": True}, 0),
    "gradnorm": ("gradnorm", GRADNORM, 0),
    "gradnorm+trunk/10": ("gradnorm", GRADNORM, 10),
    "gradnorm+trunk/1": ("gradnorm", GRADNORM, 1),
    "uncertainty": ("uncertainty", {}, 0),
    "pcgrad": ("pcgrad", {}, 0),
    "alignedmtl": ("alignedmtl", {}, 0),
    "upgrad": ("upgrad", {}, 0),
}


def measure_step_times(
    model_builder: Callable[[], nn.Module],
    imgsz: int,
    batch: int,
    methods: list[str],
    iters: int,
    warmup: int = 2,
) -> dict[str, tuple[float, float]]:
    """``(median, mean)`` seconds per training step for each label in ``methods`` (METHODS)."""
    from echomtl.losses import YoloLoss, view_loss

    torch.manual_seed(0)
    base = model_builder()
    base.train()
    images, targets, views = make_batch(batch, imgsz)
    runs = {}
    for label in methods:
        method, kwargs, every = METHODS[label]
        model = copy.deepcopy(base)
        balancer = make_balancer(method, weights=W0, **kwargs)
        params = [*model.parameters(), *balancer.extra_parameters()]
        optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9, nesterov=True)
        runs[label] = (model, balancer, optimizer, YoloLoss(model.detect, imgsz), every)

    def one_step(label: str, i: int) -> float:
        model, balancer, optimizer, criterion, every = runs[label]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = model(images)
        loss_det, _ = criterion(out.det, targets)
        losses = {"det": loss_det}
        if out.view_logits is not None:
            losses["cls"] = view_loss(out.view_logits, views)
        balancer.step(losses, out, model, diagnostics_due=every > 0 and i % every == 0)
        optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {label: [] for label in methods}
    for i in range(warmup + iters):
        for label in methods:
            t = one_step(label, i)
            if i >= warmup:
                times[label].append(t)
    return {label: (statistics.median(ts), statistics.fmean(ts)) for label, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["n:128:16", "s:320:8"],
        help="scale:imgsz:batch (default n@128 batch 16, s@320 batch 8)",
    )
    parser.add_argument("--methods", nargs="+", default=None, help=f"from {list(METHODS)}")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from echomtl.models.multitask import build_model

    jd = set(available_aggregators())
    methods = args.methods or [
        m for m, (name, _, _) in METHODS.items() if name not in ("pcgrad", "alignedmtl", "upgrad")
        or name in jd
    ]  # fmt: skip
    print(f"torch {torch.__version__}, {args.threads} threads, {args.iters} steps per method")
    for cfg in args.configs:
        scale, imgsz, batch = cfg.split(":")
        imgsz, batch = int(imgsz), int(batch)
        res = measure_step_times(
            lambda s=scale: build_model("multitask", s, nc=4, n_views=3),
            imgsz,
            batch,
            methods,
            args.iters,
        )
        ref = res.get("fixed")
        print(f"\nyolov5{scale} {imgsz} px, batch {batch}")
        print(f"{'method':<20} {'median s':>9} {'x fixed':>8} {'mean s':>9} {'x fixed':>8}")
        for label, (med, mean) in res.items():
            r_med = f"{med / ref[0]:8.2f}" if ref else "       -"
            r_mean = f"{mean / ref[1]:8.2f}" if ref else "       -"
            print(f"{label:<20} {med:9.3f} {r_med} {mean:9.3f} {r_mean}")


if __name__ == "__main__":
    main()
