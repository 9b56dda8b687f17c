"""Accuracy side by side with the packaged YOLOv5 v7.0, from the same COCO checkpoint.

Why: a pretrained start is only as good as the transfer and the training loop that follow it.
This trains the peer (PyPI ``yolov5`` 7.0.14 in ``.venv-peer``, its own ``train.py``) and our
``det_only`` from the same checkpoint, on the same cross-validation fold (its train part; the
peer validates on the fold's validation part), at the same size, epochs, batch and nominal batch,
with YOLOv5's own schedule (hyp.scratch-low: lr0 0.01, 3 warm-up epochs, at least 100 warm-up
iterations) and no augmentation (no mosaic either), each for several seeds, 1 thread per run.
Both final models (the peer's ``last.pt``, its EMA in fp16; our EMA weights) are then read by our
checkpoint loader and scored by our evaluator on the fold's test part, so that the metric is the
same code for both. It also checks that our model loaded from the checkpoint gives the peer's
raw predictions on the same images (80 classes, every tensor but the anchors transferred, the
anchors equal).

Needs the real-data study's data stage for the fold (its splits file and caches):

    REGURG_DATA=... YOLOV5N_WEIGHTS=... .venv/bin/snakemake --cores 2 \\
        --configfile config/real-cpu.yaml results/real-cpu/cache/cv-fold0/{train,valid,test}-160.npz
    REGURG_DATA=... YOLOV5N_WEIGHTS=... .venv/bin/python benchmarks/bench_peer_accuracy.py \\
        --configfile config/real-cpu.yaml --fold 0 --imgsz 160 --epochs 10 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import yaml
from sweep_schedule import load_config, run_one, train_params

from echomtl.config import weights_path
from echomtl.data.splits import CV_PARTITION

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
#: The peer unpickles whole models (its own classes) with torch.load, which torch >= 2.6 refuses
#: by default; this restores the old default in the peer's processes only (never in ours).
PEER_ENV = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
#: YOLOv5's hyp.scratch-low with every augmentation off (mosaic included)
PEER_HYP = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "cls": 0.5, "cls_pw": 1.0,
    "obj": 1.0, "obj_pw": 1.0, "iou_t": 0.2, "anchor_t": 4.0, "fl_gamma": 0.0, "hsv_h": 0.0,
    "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0,
    "perspective": 0.0, "flipud": 0.0, "fliplr": 0.0, "mosaic": 0.0, "mixup": 0.0,
    "copy_paste": 0.0,
}  # fmt: skip
#: our side of the same recipe (train keys and hyp keys of benchmarks/sweep_schedule.py)
OUR_RECIPE = {"warmup_epochs": 3.0, "warmup_min_iterations": 100, "lr0": 0.01, "lrf": 0.01,
              "nominal_batch": 64, "init": "pretrained"}  # fmt: skip


def peer_dataset(splits_csv: Path, class_names: list[str], out: Path) -> Path:
    """The fold as a YOLO dataset folder (images linked, labels as class cx cy w h)."""
    records = pd.read_csv(splits_csv)
    for split in ("train", "valid", "test"):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
    for r in records.itertuples():
        image = Path(r.image_path)
        (out / r.split / "images" / image.name).symlink_to(image.resolve())
        lines = []
        for c, x1, y1, x2, y2 in json.loads(r.boxes):
            w, h = (x2 - x1) / r.width, (y2 - y1) / r.height
            cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
            lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (out / r.split / "labels" / f"{image.stem}.txt").write_text("\n".join(lines))
    data = {
        "path": str(out), "train": "train/images", "val": "valid/images", "test": "test/images",
        "nc": len(class_names), "names": list(class_names),
    }  # fmt: skip
    (out / "data.yaml").write_text(yaml.safe_dump(data))
    (out / "hyp.yaml").write_text(yaml.safe_dump(PEER_HYP))
    return out


def offline_font(folder: Path) -> Path:
    """A settings folder for the peer that already holds the font its train.py would download.

    The peer's ``check_dataset`` fetches Arial.ttf for its plots even with ``--noplots``; with no
    network it fails. Any TrueType file under that name stops the download (no plot is drawn):
    matplotlib's DejaVu Sans is used.
    """
    import matplotlib

    folder.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (folder / name).exists():
            (folder / name).symlink_to(font)
    return folder


def train_peer(job: tuple[Path, Path, int, int, int, int]) -> dict:
    """One run of the peer's train.py; returns its last.pt and wall seconds."""
    import time

    data, weights, imgsz, epochs, batch, seed = job
    project = data / "runs"
    command = [
        str(PEER_PYTHON), "-m", "yolov5.train", "--data", str(data / "data.yaml"),
        "--hyp", str(data / "hyp.yaml"), "--weights", str(weights), "--img", str(imgsz),
        "--epochs", str(epochs), "--batch-size", str(batch), "--seed", str(seed),
        "--workers", "0", "--device", "cpu", "--noautoanchor", "--noplots",
        "--project", str(project), "--name", f"seed{seed}", "--exist-ok",
    ]  # fmt: skip
    # no --noval: in yolov5 7.0.14 it ends train.py with an UnboundLocalError (map50s)
    env = {**PEER_ENV, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "YOLOV5_CONFIG_DIR": str(offline_font(data / "peer-settings"))}  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=data)
    seconds = time.perf_counter() - started
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"peer train.py failed (seed {seed}):\n{log[-3000:]}")
    transferred = next((ln.strip() for ln in log.splitlines() if "Transferred" in ln), "")
    last = project / f"seed{seed}" / "weights" / "last.pt"
    return {"seed": seed, "last": str(last), "train_s": round(seconds, 1),
            "transferred": transferred[transferred.find("Transferred"):]}  # fmt: skip


def score(weights: Path, test_cache: Path, class_names: list[str], view_names: list[str]) -> float:
    """Test mAP@0.5 of a YOLOv5 checkpoint, read by our loader and scored by our evaluator."""
    import torch

    from echomtl.data.cache import load_cache
    from echomtl.data.dataset import CachedDataset, make_loader
    from echomtl.evaluation.inference import evaluate_predictions, predict
    from echomtl.models.multitask import build_model
    from echomtl.models.pretrained import load_pretrained

    torch.set_num_threads(1)
    model = build_model("det_only", "n", len(class_names), len(view_names))
    result = load_pretrained(model, weights, "n")
    cache = load_cache(test_cache)
    loader = make_loader(CachedDataset(cache), batch_size=32, shuffle=False)
    images = predict(model.eval(), loader, cache)
    metrics = evaluate_predictions(images, class_names, view_names)
    assert result.count() == len(result.transferred["detector"])
    return round(metrics["detection"]["map50"], 4)


def same_predictions(weights: Path, imgsz: int) -> dict:
    """Our 80-class model from the checkpoint against the peer's own load, on the same images."""
    import torch

    from echomtl.models.multitask import build_model
    from echomtl.models.pretrained import load_pretrained, read_checkpoint

    torch.manual_seed(0)
    images = torch.rand(4, 3, imgsz, imgsz)
    model = build_model("det_only", "n", 80, 3)
    result = load_pretrained(model, weights, "n")
    checkpoint = read_checkpoint(weights, "n")
    anchors_equal = torch.equal(
        checkpoint.anchors * torch.tensor(checkpoint.strides).view(-1, 1, 1),
        model.detect.anchors,
    )
    with torch.no_grad():
        ours = model.eval()(images).det
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(images, Path(tmp) / "images.pt")
        script = (
            "import sys, torch; from yolov5.models.experimental import attempt_load;"
            f"m = attempt_load({str(weights)!r}, device='cpu', fuse=False).float().eval();"
            f"x = torch.load({str(Path(tmp) / 'images.pt')!r});"
            "torch.save([t.contiguous() for t in m(x)[1]], sys.argv[1])"
        )
        out = Path(tmp) / "peer.pt"
        subprocess.run([str(PEER_PYTHON), "-c", script, str(out)], check=True,
                       capture_output=True, env=PEER_ENV)  # fmt: skip
        peer = torch.load(out, weights_only=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, peer, strict=True))
    scale = max(float(b.abs().max()) for b in peer)
    return {
        "transferred": f"{result.count()}/{len(checkpoint.tensors)}",
        "anchors_equal": anchors_equal,
        "max_abs_diff": diff,
        "max_abs_output": scale,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", action="append", default=[])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="JSON of the results")
    args = ap.parse_args()
    config = load_config(args.configfile)
    weights = weights_path(config)
    if weights is None:
        raise SystemExit("config model.weights is null: the benchmark compares pretrained starts")
    partition = CV_PARTITION.format(fold=args.fold)
    root = Path(config["results_dir"])
    cache_dir = root / "cache" / partition
    names, views = list(config["data"]["class_names"]), list(config["data"]["view_names"])
    equivalence = same_predictions(weights, args.imgsz)
    print(json.dumps({"same_predictions": equivalence}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = peer_dataset(root / "data" / "splits" / f"{partition}.csv", names, Path(tmp))
        ours_jobs = []
        for seed in args.seeds:
            setting = {**OUR_RECIPE, "seed": seed, "epochs": args.epochs,
                       "batch_size": args.batch, "imgsz": args.imgsz}  # fmt: skip
            params = train_params(config, "det_only", setting)
            ours_jobs.append((params, setting, str(cache_dir), f"{tmp}/ours{seed}", str(weights)))
        peer_jobs = [(data, weights, args.imgsz, args.epochs, args.batch, s) for s in args.seeds]
        with ProcessPoolExecutor(args.jobs) as pool:
            peer_runs = pool.map(train_peer, peer_jobs)
            our_runs = pool.map(run_one, ours_jobs)
            peer_runs, our_runs = list(peer_runs), list(our_runs)
        test_cache = cache_dir / f"test-{args.imgsz}.npz"
        for run in peer_runs:
            run["test_map50"] = score(Path(run["last"]), test_cache, names, views)
    rows = {
        "peer": {r["seed"]: r["test_map50"] for r in peer_runs},
        "ours": {r["setting"]["seed"]: r["test_map50"] for r in our_runs},
    }
    summary = {
        side: {"per_seed": v, "mean": round(statistics.mean(v.values()), 4),
               "sd": round(statistics.stdev(v.values()), 4) if len(v) > 1 else None}
        for side, v in rows.items()
    }  # fmt: skip
    report = {
        "fold": args.fold, "imgsz": args.imgsz, "epochs": args.epochs, "batch": args.batch,
        "same_predictions": equivalence, "summary": summary,
        "peer_runs": [{k: v for k, v in r.items() if k != "last"} for r in peer_runs],
        "our_runs": our_runs,
    }  # fmt: skip
    print(json.dumps(report, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
