"""Can the data loader keep a GPU fed? The training loader alone against the model's own step.

Builds a small synthetic export and its train cache at ``--imgsz`` (default 640), then measures,
with augmentation on (the expensive case) and batch ``--batch``:

- the loader alone (``echomtl.training.trainer.epoch_loader``, the trainer's own) for each
  ``--workers`` count, including the copy to ``--device`` (pinned memory on CUDA);
- the training step (forward + loss + backward + SGD) of the multitask model at ``--scale`` on
  ``--device`` under ``--amp``, on one fixed batch, images per second.

The ratio loader/step says how many times over the loader supplies what the step consumes (under 1:
the GPU waits for data). Absolute figures of the machine it runs on.

    .venv/bin/python benchmarks/bench_loader.py                              # CPU, 640 px
    .venv/bin/python benchmarks/bench_loader.py --device cuda --amp bf16 --workers 0 2 4 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from echomtl.data.cache import build_cache, load_cache
from echomtl.data.dataset import CachedDataset
from echomtl.data.export_reader import read_export
from echomtl.data.synthetic import generate_synthetic_export
from echomtl.losses import DEFAULT_HYP, YoloLoss, view_loss
from echomtl.models.multitask import build_model
from echomtl.training.precision import Precision
from echomtl.training.trainer import batch_order, epoch_loader

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(ds: CachedDataset, batch: int, workers: int, device: torch.device) -> float:
    """Images per second out of the trainer's loader, moved to ``device``, over two epochs."""
    n, started = 0, time.perf_counter()
    for epoch in range(2):
        ds.set_epoch(epoch)
        for images, targets, _, _ in epoch_loader(
            ds, batch_order(len(ds), batch, 0, epoch), workers, device
        ):
            images.to(device, non_blocking=True)
            targets.to(device, non_blocking=True)
            n += images.shape[0]
    _sync(device)
    return n / (time.perf_counter() - started)


def step_rate(
    scale: str, imgsz: int, batch: int, device: torch.device, amp: str, ds: CachedDataset
) -> float:
    """Images per second of the multitask training step on one batch from the cache."""
    torch.manual_seed(0)
    model = build_model("multitask", scale, len(CLASSES), len(VIEWS)).to(device).train()
    criterion = YoloLoss(model.detect, imgsz, DEFAULT_HYP)
    precision = Precision(amp, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    first = batch_order(len(ds), batch, 0, 0)[:1]
    images, targets, views, _ = next(iter(epoch_loader(ds, first, 0, device)))
    images, targets, views = images.to(device), targets.to(device), views.to(device)

    def step() -> None:
        with precision.autocast():
            out = model(images)
        loss, _ = criterion([d.float() for d in out.det], targets)
        loss = loss + 0.01 * view_loss(out.view_logits.float(), views)
        opt.zero_grad(set_to_none=True)
        (loss * precision.scale).backward()
        precision.unscale_(opt)
        precision.step(opt)

    for _ in range(3):
        step()
    _sync(device)
    iters = 10 if device.type == "cuda" else 2
    started = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return batch * iters / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--images", type=int, default=64, help="synthetic training images")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--scale", default="s")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "export"
        generate_synthetic_export(export, {"train": a.images}, seed=0, workers=2)
        records, _ = read_export(export, CLASSES, VIEWS)
        cache = Path(tmp) / f"train-{a.imgsz}.npz"
        build_cache(records, "train", a.imgsz, cache)
        ds = CachedDataset(load_cache(cache), augment=True, seed=0)
        print(f"torch {torch.__version__}, device {device}, {a.imgsz} px, batch {a.batch}, "
              f"augmentation on, {len(ds)} images")  # fmt: skip
        step = step_rate(a.scale, a.imgsz, a.batch, device, a.amp, ds)
        print(f"training step (yolov5{a.scale} multitask, amp {a.amp}): {step:8.1f} images/s")
        for workers in a.workers:
            rate = loader_rate(ds, a.batch, workers, device)
            print(f"loader, {workers} workers: {rate:8.1f} images/s = {rate / step:5.2f}x the step")


if __name__ == "__main__":
    main()
