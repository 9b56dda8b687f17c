"""Training-step throughput (images/second) of our YOLOv5 re-implementation on CPU.

One step = forward + YoloLoss (+ view loss for the multitask model) + backward + SGD step, batch 16
of random images with a few random boxes each. Absolute figures of this machine only; the
comparison with the packaged YOLOv5 v7.0 is measured side by side by ``bench_peer.py``.

    .venv/bin/python benchmarks/bench_train_step.py                 # n and s at 128/160/320 px
    .venv/bin/python benchmarks/bench_train_step.py --scales n --sizes 128 --variants det_only
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import make_batch

from echomtl.losses import YoloLoss, view_loss
from echomtl.models.multitask import build_model


def bench(
    variant: str,
    scale: str,
    imgsz: int,
    bs: int,
    warmup: int,
    iters: int,
    channels_last: bool,
    seed: int = 0,
) -> float:
    torch.manual_seed(seed)
    n_views = 3
    model = build_model(variant, scale, nc=4, n_views=n_views)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = YoloLoss(model.detect, imgsz)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    images, targets, views = make_batch(bs, imgsz, n_views, boxes_per_image=2, seed=seed)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        out = model(images)
        loss, _ = loss_fn(out.det, targets)
        if out.view_logits is not None:
            loss = loss + 0.01 * view_loss(out.view_logits, views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = time.perf_counter() - t0
    return bs * iters / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scales", nargs="+", default=["n", "s"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 160, 320])
    ap.add_argument("--variants", nargs="+", default=["det_only"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (0: by image size)")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"channels_last {args.channels_last}"
    )
    print(f"{'variant':<14}{'scale':<7}{'imgsz':>6}{'img/s':>10}")
    for variant in args.variants:
        for scale in args.scales:
            for imgsz in args.sizes:
                iters = args.iters or max(3, int(20 * (128 / imgsz) ** 2))
                ips = bench(
                    variant, scale, imgsz, args.batch, args.warmup, iters, args.channels_last
                )
                print(f"{variant:<14}{scale:<7}{imgsz:>6}{ips:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
