"""Evaluation time: inference + NMS, COCO metrics, and the bootstrap, on one test split.

    .venv/bin/python benchmarks/bench_evaluation.py                  # 128 images, yolov5n, 128 px
    .venv/bin/python benchmarks/bench_evaluation.py --images 306 --imgsz 320 --scale s

Uses a freshly initialised model on random images: an untrained detector keeps the most boxes
(max_det per image at conf 0.001), so this is the slow end of evaluation.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from echomtl.data.dataset import CachedDataset, make_loader
from echomtl.evaluation.bootstrap import bootstrap_metrics
from echomtl.evaluation.inference import evaluate_predictions, predict
from echomtl.models.multitask import build_model

CLASSES, VIEWS = ["AR", "MR", "PR", "TR"], ["A4C", "PSAX", "PLAX"]


def random_cache(n: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    boxes = []
    for i in range(n):
        x1, y1 = rng.uniform(0, size * 0.6, 2)
        w, h = rng.uniform(size * 0.1, size * 0.35, 2)
        boxes.append([i, int(rng.integers(0, 4)), x1, y1, x1 + w, y1 + h])
    return {
        "images": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        "boxes": np.asarray(boxes, dtype=np.float32),
        "views": rng.integers(0, 3, n).astype(np.int64),
        "names": np.asarray([f"p{i}-c.mp4-{i}.png" for i in range(n)]),
        "orig_sizes": np.tile([size, size], (n, 1)).astype(np.int64),
        "letterbox": np.tile([1.0, 0.0, 0.0], (n, 1)).astype(np.float32),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--scale", default="n")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = random_cache(args.images, args.imgsz)
    model = build_model("multitask", args.scale, 4, 3).eval()
    loader = make_loader(CachedDataset(cache), batch_size=32)
    t0 = time.perf_counter()
    images = predict(model, loader, cache)
    t1 = time.perf_counter()
    evaluate_predictions(images, CLASSES, VIEWS)
    t2 = time.perf_counter()
    bootstrap_metrics(images, CLASSES, n_resamples=args.resamples, seed=0)
    t3 = time.perf_counter()
    boxes = sum(len(img["pred"]) for img in images) / len(images)
    print(f"yolov5{args.scale} {args.imgsz}px, {args.images} images, {boxes:.0f} boxes/image:")
    print(f"  inference + NMS     {t1 - t0:7.2f} s  ({args.images / (t1 - t0):.0f} images/s)")
    print(f"  COCO mAP + P/R/F1   {t2 - t1:7.2f} s")
    print(f"  bootstrap x{args.resamples:<5}   {t3 - t2:7.2f} s")


if __name__ == "__main__":
    main()
