"""Why the view head does not learn under augmentation (docs/methods.md, "Augmentation and the
view head"): a linear probe on augmented pixels, then training runs that switch off one
augmentation at a time, each with the real trainer on the default study's training cache.

    .venv/bin/python scripts/view_head_ablation.py results/cache/grouped/train-128.npz \
        results/cache/grouped/test-128.npz --out /tmp/view-ablation

Prints one line per probe and per run (final-epoch mean view loss; ln 3 = 1.099 is chance for
three balanced views). About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from echomtl.config import validate_config
from echomtl.data.dataset import CachedDataset
from echomtl.study import train_parameters
from echomtl.training.trainer import RunPaths, TrainParams, train

ROOT = Path(__file__).resolve().parents[1]
NO_HSV = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
NO_GEOMETRY = {"scale": 0.0, "translate": 0.0, "fliplr": 0.0}
VARIANTS = {
    "no augmentation": (False, {}),
    "full augmentation": (True, {}),
    "no HSV (geometry and flip only)": (True, NO_HSV),
    "no value gain (hsv_v = 0)": (True, {"hsv_v": 0.0}),
    "HSV only": (True, NO_GEOMETRY),
}


def probe_features(cache: Path, augment: bool, hyp: dict, epochs: int) -> tuple[np.ndarray, ...]:
    """16 x 16 average-pooled RGB of every labelled image (``epochs`` augmented draws)."""
    ds = CachedDataset(cache, augment=augment, hyp=hyp, seed=1)
    x, y = [], []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, _, view, index = ds[i]
            if index != i or view != int(ds.views[i]):
                raise AssertionError(f"item {i}: index or view label moved under augmentation")
            if view >= 0:
                pooled = torch.nn.functional.avg_pool2d(image.float()[None] / 255, 8)
                x.append(pooled.flatten().numpy())
                y.append(view)
    return np.array(x), np.array(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_cache", type=Path)
    parser.add_argument("test_cache", type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--w-cls", type=float, default=1.0)
    args = parser.parse_args()
    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    hyp = dict(cfg["train"]["hyp"])
    torch.set_num_threads(1)
    for name, (augment, change) in VARIANTS.items():
        h = {**hyp, **change}
        x, y = probe_features(args.train_cache, augment, h, 3 if augment else 1)
        xt, yt = probe_features(args.test_cache, augment, h, 1)
        score = LogisticRegression(max_iter=3000).fit(x, y).score(xt, yt)
        chance = np.bincount(yt).max() / len(yt)
        print(f"probe  {name:34s} test accuracy {score:.3f} (majority {chance:.3f})", flush=True)
    for k, (name, (augment, change)) in enumerate(VARIANTS.items()):
        run = args.out / f"run{k}"
        row = pd.Series({"experiment": f"ablation{k}", "model": "multitask", "scale": None,
                         "method": "fixed", "w_det": 1.0, "w_cls": args.w_cls, "alpha": None,
                         "augment": augment, "init": "scratch"})  # fmt: skip
        params = train_parameters(cfg, row, 0, None)
        params["hyp"].update(change)
        p = TrainParams.from_dict(params)
        files = [run / f for f in ("weights.pt", "steps.csv", "epochs.csv", "diagnostics.csv")]
        train(p, RunPaths(args.train_cache, *files, run / "checkpoints"))
        loss = pd.read_csv(run / "epochs.csv")["loss_cls"]
        print(f"train  {name:34s} view loss epoch 1 {loss.iloc[0]:.3f} -> last {loss.iloc[-1]:.3f}"
              f" (chance {math.log(3):.3f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
