"""Training-step throughput of our YOLOv5 against the packaged YOLOv5 v7.0, side by side.

The peer is the ``yolov5`` package of PyPI (7.0.14), installed by ``--setup`` into its own virtual
environment ``.venv-peer`` (never a dependency of echomtl). That environment sees this project's
torch build through a ``.pth`` file, so that both sides run the same torch.

For each scale and size: our detector is built with a fixed seed, its weights are loaded into the
peer's ``Model`` (anchors converted from pixels to grid units), both compute the loss and the
gradients of one identical batch (printed: they must agree), then timed rounds alternate between
the two processes (neither runs while the other is timed), with the same threads and batch. The
ratio is the peer's median seconds per step over ours.

    .venv/bin/python benchmarks/bench_peer.py --setup        # once: make .venv-peer (network)
    .venv/bin/python benchmarks/bench_peer.py                # n and s at 128/160/320 px
    .venv/bin/python benchmarks/bench_peer.py --scales n --sizes 128 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
from _common import make_batch

from echomtl.losses import DEFAULT_HYP, YoloLoss
from echomtl.models.multitask import build_model
from echomtl.training.precision import Precision

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_PACKAGE = "yolov5==7.0.14"


def setup() -> None:
    """Make ``.venv-peer``: the PyPI yolov5 with this project's torch (shared through a .pth)."""
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    site = PEER_VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (site / "site-packages" / "_shared_torch.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    pip = [str(PEER_PYTHON), "-m", "pip", "install", "--quiet"]
    # yolov5 7.0 imports pkg_resources, which setuptools 81 removed, and its metrics call
    # np.trapz, which numpy 2.4 removed (this venv's own numpy shadows the shared one)
    subprocess.run([*pip, PEER_PACKAGE, "setuptools<81", "numpy==2.2.6"], check=True)


def peer_hyp(nc: int, imgsz: int, nl: int = 3) -> dict:
    """The hyp the peer's ComputeLoss reads, with the gains its train.py scales (as ours does)."""
    h = DEFAULT_HYP
    return {
        "box": h["box"] * 3 / nl,
        "cls": h["cls"] * nc / 80 * 3 / nl,
        "obj": h["obj"] * (imgsz / 640) ** 2 * 3 / nl,
        "anchor_t": h["anchor_t"],
        "label_smoothing": h["label_smoothing"],
        "cls_pw": 1.0,
        "obj_pw": 1.0,
        "fl_gamma": 0.0,
    }


class Peer:
    """The peer worker process (benchmarks/_peer_worker.py in .venv-peer)."""

    def __init__(self) -> None:
        if not PEER_PYTHON.exists():
            raise SystemExit(f"{PEER_VENV} is missing: run benchmarks/bench_peer.py --setup")
        worker = Path(__file__).with_name("_peer_worker.py")
        # the peer logs a model summary per build: kept in a file, shown only when it fails
        self.log = tempfile.NamedTemporaryFile("w+", suffix="-peer.log", delete=False)
        self.proc = subprocess.Popen(
            [str(PEER_PYTHON), str(worker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, cwd=tempfile.gettempdir(),
        )  # fmt: skip

    def ask(self, **msg: object) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the peer worker stopped:\n" + Path(self.log.name).read_text()[-3000:])
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)


#: how our step may run (candidates for speed; the numerics are compared with the peer's either way)
MODES = ("eager", "channels_last", "compile")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    scale: str, imgsz: int, bs: int, threads: int, rounds: int, steps: int, peer: Peer,
    mode: str = "eager", device: str = "cpu", amp: str = "fp32",
) -> dict:  # fmt: skip
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model("det_only", scale, nc=4, n_views=3)
    model.train()
    loss_fn = YoloLoss(model.detect, imgsz)
    images, targets, _ = make_batch(bs, imgsz, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        weights, batch = Path(tmp) / "w.pt", Path(tmp) / "b.pt"
        torch.save(model.detector.state_dict(), weights)
        torch.save({"images": images, "targets": targets}, batch)
        theirs = peer.ask(
            cmd="load", scale=scale, nc=4, imgsz=imgsz, threads=threads,
            hyp=peer_hyp(4, imgsz), weights=str(weights), batch=str(batch), device=device,
            amp=amp,
        )  # fmt: skip
    model, images, targets = model.to(dev), images.to(dev), targets.to(dev)
    loss_fn = YoloLoss(model.detect, imgsz)
    precision = Precision(amp, dev)
    forward = model
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        forward = model
    elif mode == "compile":
        forward = torch.compile(model)

    def loss_of_batch() -> torch.Tensor:
        with precision.autocast():  # the trainer's recipe: forward in autocast, loss in float32
            det = forward(images).det
        return loss_fn([d.float() for d in det], targets)[0]

    started = time.perf_counter()
    loss = loss_of_batch()
    model.zero_grad(set_to_none=True)
    loss.backward()
    _sync(dev)
    first_step = time.perf_counter() - started
    ours_norms = {n.removeprefix("detector."): float(p.grad.norm())
                  for n, p in model.named_parameters() if p.grad is not None}  # fmt: skip
    common = sorted(set(ours_norms) & set(theirs["grad_norms"]))
    rel = max(abs(ours_norms[n] - theirs["grad_norms"][n]) / max(ours_norms[n], 1e-12)
              for n in common)  # fmt: skip
    # the trainer's optimizer: multi-tensor SGD (echomtl.training.optim)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True, foreach=True)

    def ours(n: int) -> float:
        _sync(dev)
        start = time.perf_counter()
        for _ in range(n):
            loss = loss_of_batch()
            opt.zero_grad(set_to_none=True)
            (loss * precision.scale).backward()
            precision.unscale_(opt)
            precision.step(opt)
        _sync(dev)
        return time.perf_counter() - start

    ours(2)
    peer.ask(cmd="time", steps=2)  # warm-up both
    ours_s, peer_s = [], []
    for _ in range(rounds):  # interleaved: neither side runs while the other is timed
        ours_s.append(ours(steps) / steps)
        peer_s.append(peer.ask(cmd="time", steps=steps)["seconds"] / steps)
    return {
        "loss_ours": float(loss.detach()), "loss_peer": theirs["loss"], "grad_rel_diff": rel,
        "n_params_compared": len(common), "ours_s": statistics.median(ours_s),
        "peer_s": statistics.median(peer_s), "first_step_s": first_step,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="make .venv-peer and exit")
    ap.add_argument("--scales", nargs="+", default=["n", "s"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 160, 320])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--mode", choices=MODES, default="eager", help="how our step runs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:k], both sides")
    ap.add_argument("--amp", choices=["fp32", "bf16", "fp16"], default="fp32", help="both sides")
    args = ap.parse_args()
    if args.setup:
        setup()
        return
    print(f"peer: {PEER_PACKAGE} in {PEER_VENV.name}; torch {torch.__version__} on both sides; "
          f"batch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds of "
          f"{args.steps} steps (median); ours: {args.mode}; {args.device}, "
          f"amp {args.amp}")  # fmt: skip
    head = ("scale", "imgsz", "loss ours", "loss peer", "max grad diff", "ours img/s",
            "peer img/s", "ratio", "first s")  # fmt: skip
    print("{:<6}{:>6}{:>12}{:>12}{:>15}{:>12}{:>12}{:>8}{:>9}".format(*head))
    peer = Peer()
    try:
        for scale in args.scales:
            for imgsz in args.sizes:
                r = compare(scale, imgsz, args.batch, args.threads, args.rounds, args.steps, peer,
                            args.mode, args.device, args.amp)  # fmt: skip
                print(f"{scale:<6}{imgsz:>6}{r['loss_ours']:>12.6f}{r['loss_peer']:>12.6f}"
                      f"{r['grad_rel_diff']:>15.2e}{args.batch / r['ours_s']:>12.1f}"
                      f"{args.batch / r['peer_s']:>12.1f}{r['peer_s'] / r['ours_s']:>7.2f}x"
                      f"{r['first_step_s']:>9.1f}", flush=True)  # fmt: skip
    finally:
        peer.close()
    print(
        "ratio: the peer's seconds per step over ours (> 1: ours faster); max grad diff: the "
        "largest relative difference of a parameter's gradient norm after one identical step"
    )


if __name__ == "__main__":
    main()
