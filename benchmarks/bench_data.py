"""Data-stage throughput: synthetic generation, cache build, DataLoader images/second.

Usage::

    .venv/bin/python benchmarks/bench_data.py                 # generate 1042/183/306 in a temp dir
    .venv/bin/python benchmarks/bench_data.py --train 320 --valid 0 --test 0
    .venv/bin/python benchmarks/bench_data.py --export "$REGURG_DATA"

Prints the time to generate the export (when generated), to read it, to build the ``train`` cache
at ``--imgsz`` (default 128), and the DataLoader throughput at batch 16 with and without
augmentation (``num_workers=0``, torch with one thread unless ``--threads``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from echomtl.data.cache import build_cache, load_cache
from echomtl.data.dataset import CachedDataset, make_loader
from echomtl.data.export_reader import read_export
from echomtl.data.synthetic import DEFAULT_SIZES, generate_synthetic_export

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]


def loader_throughput(ds: CachedDataset, batch_size: int, epochs: int) -> float:
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        for batch in make_loader(ds, batch_size, shuffle=True, seed=0, epoch=epoch):
            n += batch.images.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", type=Path, help="existing export (default: generate one)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2, help="loader passes per measurement")
    p.add_argument("--threads", type=int, default=1)
    for s, n in DEFAULT_SIZES.items():
        p.add_argument(f"--{s}", type=int, default=n)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = a.export
        if root is None:
            root = Path(tmp) / "export"
            sizes = {"train": a.train, "valid": a.valid, "test": a.test}
            t0 = time.perf_counter()
            generate_synthetic_export(root, sizes, seed=0)
            dt = time.perf_counter() - t0
            n = sum(sizes.values())
            print(f"generate synthetic export : {n} images in {dt:.1f} s ({n / dt:.1f} img/s)")
        t0 = time.perf_counter()
        records, defects = read_export(root, CLASSES, VIEWS)
        dt = time.perf_counter() - t0
        n_def = len(defects)
        print(f"read export               : {len(records)} records, {n_def} defects, {dt:.1f} s")

        out = Path(tmp) / f"train-{a.imgsz}.npz"
        stats = build_cache(records, "train", a.imgsz, out)
        n, dt = stats["n_images"], stats["seconds"]
        print(
            f"build cache (train, {a.imgsz} px) : {n} images in {dt:.2f} s ({n / dt:.0f} img/s), "
            f"{stats['bytes'] / 2**20:.1f} MiB"
        )
        t0 = time.perf_counter()
        cache = load_cache(out)
        print(f"load cache                : {time.perf_counter() - t0:.3f} s")

        plain = CachedDataset(cache, augment=False)
        aug = CachedDataset(cache, augment=True, seed=0)
        loader_throughput(plain, a.batch, 1)  # warm-up
        r_plain = loader_throughput(plain, a.batch, a.epochs)
        r_aug = loader_throughput(aug, a.batch, a.epochs)
        print(f"DataLoader, batch {a.batch}, no augmentation : {r_plain:8.0f} img/s")
        print(f"DataLoader, batch {a.batch}, augmentation    : {r_aug:8.0f} img/s")
        print(f"(torch threads {torch.get_num_threads()}, num_workers 0, {a.epochs} epochs each)")


if __name__ == "__main__":
    main()
