"""Accuracy against cost for short schedules: train one experiment under several schedules.

Why: the small configs train for a few hundred steps, where YOLOv5's warm-up (at least 100
iterations, ``max(3 epochs, 100)``) is half of the run. Each small config chooses its warm-up
(and epochs, size) from this sweep's numbers, written in its comments and in docs/pretrained.md.

It reads the caches a study already built (``<results_dir>/cache/<partition>/``), trains the
experiment once per setting (in ``--jobs`` processes, 1 thread each) with the study's parameters
overridden by the setting, and prints test (and validation) mAP@0.5 and the wall seconds of each.

    .venv/bin/python benchmarks/sweep_schedule.py --experiment det_only \\
        --set warmup_epochs=3,warmup_min_iterations=100 \\
        --set warmup_epochs=1,warmup_min_iterations=0
    .venv/bin/python benchmarks/sweep_schedule.py --configfile config/real-cpu.yaml \\
        --partition cv-fold0 --set epochs=10 --set epochs=20 --set imgsz=320,epochs=10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from echomtl.config import load_experiments, validate_config, weights_path
from echomtl.study import as_table, resolve_inits, train_parameters

ROOT = Path(__file__).resolve().parents[1]
TRAIN_KEYS = ("epochs", "batch_size", "nominal_batch", "warmup_min_iterations", "cos_lr")
HYP_KEYS = ("warmup_epochs", "lr0", "lrf", "warmup_bias_lr")


def load_config(overlays: list[str]) -> dict:
    """config/config.yaml with the overlays, as snakemake --configfile merges them."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for overlay in overlays:
        _merge(config, yaml.safe_load(Path(overlay).read_text()))
    return validate_config(config)


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def parse_setting(text: str) -> dict[str, Any]:
    """``key=value,key=value`` -> dict (values read as YAML scalars)."""
    setting = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in (*TRAIN_KEYS, *HYP_KEYS, "imgsz", "init", "seed"):
            raise SystemExit(f"--set {text}: unknown key {key!r}")
        setting[key] = yaml.safe_load(value)
    return setting


def train_params(config: dict, experiment: str, setting: dict) -> dict:
    """The study's parameters of one run (echomtl.study.train_parameters), then the setting."""
    table = load_experiments(config["experiments"])
    weights = weights_path(config)
    table["init"] = resolve_inits(table, weights is not None, config["experiments"])
    row = as_table(table).loc[experiment].copy()
    row["init"] = setting.get("init") or row["init"]
    sha = None
    if row["init"] == "pretrained":
        from echomtl.atomic import sha256_file

        sha = sha256_file(weights)
    params = train_parameters(config, row, int(setting.get("seed", 0)), sha)
    params["imgsz"] = int(setting.get("imgsz", params["imgsz"]))
    for key, value in setting.items():
        if key in TRAIN_KEYS:
            params[key] = value
        elif key in HYP_KEYS:
            params["hyp"][key] = value
    return params


def run_one(job: tuple[dict, dict, str, str, str | None]) -> dict:
    params, setting, cache_dir, out_dir, weights = job
    import torch

    from echomtl.data.cache import load_cache
    from echomtl.data.dataset import CachedDataset, make_loader
    from echomtl.evaluation.inference import evaluate_predictions, predict
    from echomtl.training.trainer import RunPaths, TrainParams, load_weights, train

    torch.set_num_threads(1)
    p = TrainParams.from_dict(params)
    run = Path(out_dir)
    caches = {s: Path(cache_dir) / f"{s}-{p.imgsz}.npz" for s in ("train", "valid", "test")}
    missing = [str(c) for c in caches.values() if not c.is_file()]
    if missing:
        raise SystemExit(f"missing caches {missing}: build them with snakemake first")
    paths = RunPaths(
        caches["train"], run / "weights.pt", run / "steps.csv", run / "epochs.csv",
        run / "diagnostics.csv", run / "checkpoints", Path(weights) if weights else None,
    )  # fmt: skip
    started = time.perf_counter()
    summary = train(p, paths)
    seconds = time.perf_counter() - started
    model = load_weights(paths.weights)[0]
    result = {"setting": setting, "steps": summary["steps"], "train_s": round(seconds, 1)}
    for split in ("valid", "test"):
        cache = load_cache(caches[split])
        loader = make_loader(CachedDataset(cache), batch_size=32, shuffle=False)
        images = predict(model, loader, cache)
        metrics = evaluate_predictions(images, p.class_names, p.view_names)
        result[f"{split}_map50"] = round(metrics["detection"]["map50"], 4)
        if metrics["classification"]:
            result[f"{split}_accuracy"] = round(metrics["classification"]["accuracy"], 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", action="append", default=[], help="overlay(s) of config.yaml")
    ap.add_argument("--experiment", default="det_only")
    ap.add_argument("--partition", default=None, help="cache folder (default: data.split_scheme)")
    ap.add_argument("--set", action="append", required=True, help="key=value,... one setting")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON lines of the results")
    args = ap.parse_args()
    config = load_config(args.configfile)
    partition = args.partition or config["data"]["split_scheme"]
    cache_dir = Path(config["results_dir"]) / "cache" / partition
    weights = weights_path(config)
    settings = [parse_setting(s) for s in args.set]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            (train_params(config, args.experiment, s), s, str(cache_dir), f"{tmp}/{i}",
             str(weights) if weights else None)
            for i, s in enumerate(settings)
        ]  # fmt: skip
        with ProcessPoolExecutor(args.jobs) as pool:
            for result in pool.map(run_one, jobs):
                line = json.dumps({"experiment": args.experiment, "partition": partition, **result})
                print(line, flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(line + "\n")


if __name__ == "__main__":
    main()
