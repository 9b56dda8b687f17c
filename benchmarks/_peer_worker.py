"""The peer side of bench_peer.py: the packaged YOLOv5 v7.0 (PyPI ``yolov5``), run in its own
virtual environment (``.venv-peer``, made by ``bench_peer.py --setup``), never imported by echomtl.

Protocol: one JSON object per line on stdin, one answer per line on stdout.
- ``{"cmd": "load", "scale", "nc", "imgsz", "hyp", "threads", "weights", "batch"}``: build
  ``yolov5<scale>.yaml``, load our state dict (anchors converted from pixels to grid units),
  read the batch; answers the loss of one forward pass and the gradient norm per parameter.
- ``{"cmd": "time", "steps"}``: ``steps`` training steps (forward, loss, backward, SGD); answers
  the seconds they took.
``load`` may also carry ``device`` (default ``cpu``) and ``amp`` (``fp32``, ``bf16``, ``fp16``):
the peer's own mixed-precision recipe then runs (forward and loss under autocast, a GradScaler
for fp16), as its ``train.py`` does.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import contextlib
    from pathlib import Path

    import torch
    import yolov5
    from yolov5.models.yolo import Model
    from yolov5.utils.loss import ComputeLoss

    state: dict = {}
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "load":
            torch.set_num_threads(int(msg["threads"]))
            torch.manual_seed(0)
            cfg = Path(yolov5.__file__).parent / "models" / f"yolov5{msg['scale']}.yaml"
            model = Model(str(cfg), ch=3, nc=int(msg["nc"]))
            device = torch.device(msg.get("device", "cpu"))
            amp = msg.get("amp", "fp32")
            ours = torch.load(msg["weights"], weights_only=True)
            detect = model.model[-1]
            ours = {k: v for k, v in ours.items() if not k.endswith(".stride")}
            anchors_key = next(k for k in ours if k.endswith(".anchors"))
            ours[anchors_key] = ours[anchors_key] / detect.stride.view(-1, 1, 1)
            missing, unexpected = model.load_state_dict(ours, strict=False)
            if missing or unexpected:
                raise SystemExit(f"weights do not map: missing {missing}, unexpected {unexpected}")
            model.hyp = dict(msg["hyp"])
            model = model.to(device).train()
            loss_fn = ComputeLoss(model)
            batch = torch.load(msg["batch"], weights_only=True)
            images, targets = batch["images"].to(device), batch["targets"].to(device)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
            scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

            def autocast(dtype=dtype, device=device):  # noqa: ANN202
                if dtype is None:
                    return contextlib.nullcontext()
                return torch.autocast(device.type, dtype=dtype)

            def sync(device=device) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            with autocast():
                loss, _ = loss_fn(model(images), targets)
            model.zero_grad(set_to_none=True)
            loss.backward()
            norms = {
                n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None
            }
            state = {
                "model": model,
                "loss_fn": loss_fn,
                "opt": opt,
                "batch": (images, targets),
                "autocast": autocast,
                "scaler": scaler,
                "sync": sync,
            }
            print(json.dumps({"loss": float(loss), "grad_norms": norms}), flush=True)
        elif msg["cmd"] == "time":
            model, loss_fn, opt = state["model"], state["loss_fn"], state["opt"]
            images, targets = state["batch"]
            scaler = state["scaler"]
            state["sync"]()
            start = time.perf_counter()
            for _ in range(int(msg["steps"])):
                with state["autocast"]():
                    loss, _ = loss_fn(model(images), targets)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            state["sync"]()
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif msg["cmd"] == "quit":
            return


if __name__ == "__main__":
    main()
