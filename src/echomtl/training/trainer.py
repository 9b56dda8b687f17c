"""The training loop: YOLOv5 v7.0 recipe, a loss balancer, exact resume.

Every epoch drops its last partial batch: the YOLOv5 loss is multiplied by the batch size, so a
4-image remainder of a 16-image batch logs a detection loss a quarter of normal and feeds that to
GradNorm's loss ratios. The order is reshuffled each epoch, so every image is still seen.

Reproducibility rests on three choices: every source of randomness is seeded from (seed, epoch)
or saved in the checkpoint (the global torch RNG that dropout uses); the batch order of an epoch is
a function of (seed, epoch) alone, so a run resumed mid-epoch sees the same batches; and pending
accumulated gradients are saved with the checkpoint, so resuming between two optimizer steps loses
nothing. A killed run therefore ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from echomtl.atomic import atomic_path
from echomtl.balancing import make_balancer
from echomtl.balancing.base import (
    DIAGNOSTIC_KEYS,
    has_shared_trunk,
    last_shared_weight,
    shared_parameters,
)
from echomtl.balancing.diagnostics import null_reference
from echomtl.config import INITS
from echomtl.console import duration, say
from echomtl.data.cache import load_cache
from echomtl.data.dataset import CachedDataset, collate
from echomtl.losses import YoloLoss, view_loss
from echomtl.models.multitask import build_model, count_parameters
from echomtl.models.pretrained import load_pretrained
from echomtl.training import checkpoint as ckpt
from echomtl.training.ema import ModelEMA
from echomtl.training.optim import (
    accumulation_steps,
    apply_warmup,
    build_optimizer,
    lr_lambda,
    set_epoch_lr,
    warmup_accumulation,
    warmup_iterations,
)
from echomtl.training.precision import Precision
from echomtl.training.runlog import progress, write_csv

LOG = logging.getLogger("echomtl.train")

#: GradNorm's own quantities on W (empty for other methods): G_i, targets, r_i, L_grad.
GRADNORM_COLUMNS = ["G_det", "G_cls", "target_det", "target_cls", "r_det", "r_cls", "L_grad"]
#: ``StepRecord.info`` keys a method may log: aggregator weights (torchjd), log-variances
#: (uncertainty), GradNorm's quantities. Any other key is an error, never silently dropped.
INFO_COLUMNS = ["agg_weight_det", "agg_weight_cls", "log_var_det", "log_var_cls", *GRADNORM_COLUMNS]
STEP_COLUMNS = [
    "epoch", "step", "lr", "loss_det", "loss_cls", "loss_box", "loss_obj", "loss_class",
    "weight_det", "weight_cls", "eff_weight_det", "eff_weight_cls", *INFO_COLUMNS,
]  # fmt: skip
EPOCH_COLUMNS = [
    "epoch", "lr", "loss_det", "loss_cls", "loss_box", "loss_obj", "loss_class",
    "weight_det", "weight_cls", "eff_weight_det", "eff_weight_cls", "seconds",
]  # fmt: skip
DIAGNOSTIC_COLUMNS = ["epoch", "step", *DIAGNOSTIC_KEYS, *GRADNORM_COLUMNS]


@dataclass
class TrainParams:
    """Everything that shapes a training run (its hash guards resume)."""

    experiment: str
    seed: int
    model: str
    scale: str
    class_names: list[str]
    view_names: list[str]
    imgsz: int
    epochs: int
    batch_size: int
    method: str
    w_det: float
    w_cls: float
    augment: bool
    hyp: dict[str, float]
    alpha: float | None = None
    attach_layer: int = 9
    cls_dropout: float = 0.2
    nominal_batch: int = 64
    cos_lr: bool = False
    grad_clip: float = 10.0
    ema: bool = True
    gradnorm: dict[str, Any] = field(default_factory=dict)
    diagnostics_every: int = 10
    amp: str = "fp32"
    warmup_min_iterations: int = 100
    #: "scratch" (random weights) or "pretrained" (every network from an official checkpoint)
    init: str = "scratch"
    #: the checkpoint's SHA-256: a run from another file is another run (fingerprint, metadata)
    weights_sha256: str | None = None

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainParams:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown training parameters: {', '.join(unknown)}")
        return cls(**params)


@dataclass
class RunPaths:
    train_cache: Path
    weights: Path
    steps_csv: Path
    epochs_csv: Path
    diagnostics_csv: Path
    checkpoint_dir: Path
    pretrained: Path | None = None  # the checkpoint file of a pretrained start


class _StopRequest:
    """SIGTERM sets a flag; the loop checkpoints at the next batch boundary and exits."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        LOG.warning("received signal %d: checkpointing at the next batch boundary", signum)
        self.requested = True


class TrainingInterrupted(RuntimeError):
    """Raised after a clean checkpoint on SIGTERM, so the job ends unfinished but resumable."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_torch(threads: int, device: str) -> torch.device:
    """Threads follow the job's allocation; deterministic kernels make reruns bit-identical."""
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device is {device!r} but CUDA is not available here")
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(device)


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The full batches of an epoch, a function of (seed, epoch); the remainder is dropped."""
    if n < batch_size:
        raise ValueError(
            f"the training split has {n} images, fewer than one batch (config train.batch_size "
            f"{batch_size}): lower the batch size"
        )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return list(order[: n - n % batch_size].split(batch_size))


def _balancer_kwargs(p: TrainParams, device: torch.device) -> dict[str, Any]:
    weights = {"det": p.w_det} if p.model == "det_only" else {"det": p.w_det, "cls": p.w_cls}
    cheap = p.model == "multitask"  # per-step W/feature rows for every shared-trunk method
    if p.method == "gradnorm":
        return {"initial_weights": weights, "alpha": p.alpha, **p.gradnorm}
    if p.method in ("fixed", "uncertainty"):
        return {"weights": weights, "cheap_diagnostics": cheap}
    if p.method == "rlw":
        return {"weights": weights, "seed": p.seed, "cheap_diagnostics": cheap}
    # torchjd's Jacobian: the two rows one after the other on CPU, where vmap over the
    # convolution backward costs more than a second backward (PCGrad step 2.2x fixed weights
    # with vmap, 1.7x without, yolov5n 128 px, 1 thread, benchmarks/README.md); at once on GPU
    return {"initial_weights": weights, "parallel_chunk_size": 1 if device.type == "cpu" else None}


def half_batch_losses(
    criterion: YoloLoss, det: list[torch.Tensor], targets: torch.Tensor
) -> list[torch.Tensor]:
    """Detection losses of the first and second half of a batch (for the null reference)."""
    half = det[0].shape[0] // 2
    first = targets[:, 0] < half
    second = targets[~first].clone()
    second[:, 0] -= half
    loss_a, _ = criterion([d[:half] for d in det], targets[first])
    loss_b, _ = criterion([d[half:] for d in det], second)
    return [loss_a, loss_b]


def _with_null(rows: list[dict], null: dict[str, float]) -> list[dict]:
    return [{**r, "null_cosine": null[r["scope"]]} if r["scope"] in null else r for r in rows]


def _info_values(info: dict[str, float], step: int) -> dict[str, float]:
    unknown = sorted(set(info) - set(INFO_COLUMNS))
    if unknown:
        raise KeyError(f"step {step}: balancer logged {unknown}, not columns of steps.csv")
    return dict(info)


def _pending_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: q.grad.detach().clone() for n, q in model.named_parameters() if q.grad is not None}


def _restore_grads(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        param.grad = grads[name].to(param.device) if name in grads else None


def epoch_loader(
    dataset: CachedDataset, batches: list[torch.Tensor], workers: int, device: torch.device
) -> DataLoader:
    """The given batches of one epoch, in order; ``workers`` processes build them.

    The items do not depend on the process that builds them (their random numbers come from
    (seed, epoch, index)), so any number of workers yields the same batches. Pinned memory
    lets the copy to a GPU overlap the previous step. The loader gets a generator of its own: an
    iterator draws its workers' base seed from it, and from the global RNG without one, which
    would shift the dropout masks of a resumed run (the global RNG is saved in the checkpoint).
    """
    return DataLoader(
        dataset,
        batch_sampler=[b.tolist() for b in batches],
        collate_fn=collate,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def train(
    params: TrainParams,
    paths: RunPaths,
    threads: int = 1,
    device: str = "cpu",
    stop_after_batches: int | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Train one experiment and seed; returns a summary. Resumes from a valid checkpoint.

    ``threads``, ``device`` and ``workers`` (data-loading processes) change how fast, not what:
    they are not part of the run's fingerprint.
    """
    dev = configure_torch(threads, device)
    p = params
    fingerprint = ckpt.fingerprint(asdict(p))
    seed_everything(p.seed)

    cache = load_cache(paths.train_cache)
    dataset = CachedDataset(cache, augment=p.augment, hyp=p.hyp, seed=p.seed)
    n_images = len(dataset)
    model = build_model(
        p.model, p.scale, len(p.class_names), len(p.view_names), p.attach_layer, p.cls_dropout
    )
    if p.init == "pretrained":
        if paths.pretrained is None:
            raise ValueError(f"{p.experiment}: init 'pretrained' needs a checkpoint file")
        load_pretrained(model, paths.pretrained, p.scale, p.weights_sha256)
    elif p.init != "scratch":
        raise ValueError(f"{p.experiment}: init {p.init!r} is not one of {INITS}")
    model = model.to(dev)
    balancer = make_balancer(p.method, **_balancer_kwargs(p, dev))
    criterion = YoloLoss(model.detect, p.imgsz, p.hyp)
    precision = Precision(p.amp, dev)

    accumulate_nominal = accumulation_steps(p.nominal_batch, p.batch_size)
    weight_decay = p.hyp["weight_decay"] * p.batch_size * accumulate_nominal / p.nominal_batch
    extra = list(balancer.extra_parameters())
    for q in extra:
        q.data = q.data.to(dev)
    optimizer = build_optimizer(model, p.hyp["lr0"], p.hyp["momentum"], weight_decay, extra)
    clip_groups = model.clip_groups()  # per network: the controls stay isolated
    trunk = shared_parameters(model)  # for the null reference
    lf = lr_lambda(p.epochs, p.hyp["lrf"], p.cos_lr)
    ema = ModelEMA(model) if p.ema else None
    batches_per_epoch = n_images // p.batch_size
    n_warmup = warmup_iterations(p.hyp["warmup_epochs"], batches_per_epoch, p.warmup_min_iterations)

    step_rows: list[dict] = []
    epoch_rows: list[dict] = []
    diag_rows: list[dict] = []
    start_epoch, start_batch, last_opt_step = 0, 0, -1
    state = ckpt.load_checkpoint(paths.checkpoint_dir, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        balancer.load_state_dict(state["balancer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        _restore_grads(model, state["grads"])
        precision.load_state_dict(state["precision"])
        torch.set_rng_state(state["torch_rng"])
        step_rows, epoch_rows, diag_rows = state["steps"], state["epochs"], state["diagnostics"]
        start_epoch, start_batch = int(state["epoch"]), int(state["batch"])
        last_opt_step = int(state["last_opt_step"])
        LOG.info("resumed at epoch %d batch %d", start_epoch, start_batch)
    else:
        LOG.info(
            "training %s seed %d: %s %s (%d parameters), %d images, %d epochs",
            p.experiment, p.seed, p.model, p.scale, count_parameters(model), n_images, p.epochs,
        )  # fmt: skip

    def save(epoch: int, batch: int) -> None:
        ckpt.save_checkpoint(
            {
                "fingerprint": fingerprint,
                "epoch": epoch,
                "batch": batch,
                "last_opt_step": last_opt_step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "balancer": balancer.state_dict(),
                "ema": ema.state_dict() if ema is not None else {},
                "grads": _pending_grads(model),
                "precision": precision.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "steps": step_rows,
                "epochs": epoch_rows,
                "diagnostics": diag_rows,
            },
            paths.checkpoint_dir,
        )

    stop = _StopRequest()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    batches_run = 0
    run_started = time.perf_counter()
    try:
        for epoch in range(start_epoch, p.epochs):
            model.train()
            dataset.set_epoch(epoch)
            batches = batch_order(n_images, p.batch_size, p.seed, epoch)
            first = start_batch if epoch == start_epoch else 0
            started = time.perf_counter()
            bar = progress(len(batches) - first, f"{p.experiment} epoch {epoch + 1}/{p.epochs}")
            loader = epoch_loader(dataset, batches[first:], workers, dev)
            for i, (images, targets, views, _) in enumerate(loader, start=first):
                ni = i + batches_per_epoch * epoch
                if ni <= n_warmup:
                    apply_warmup(
                        optimizer, ni, n_warmup, lf(epoch), p.hyp["warmup_bias_lr"],
                        p.hyp["warmup_momentum"], p.hyp["momentum"],
                    )  # fmt: skip
                    accumulate = warmup_accumulation(ni, n_warmup, p.nominal_batch, p.batch_size)
                else:
                    set_epoch_lr(optimizer, lf(epoch))
                    accumulate = accumulate_nominal
                images = images.to(dev, non_blocking=True)
                targets, views = targets.to(dev, non_blocking=True), views.to(dev)
                with precision.autocast():
                    out = model(images)
                # the losses in float32 (module docstring of echomtl.training.precision)
                det = [d.float() for d in out.det]
                loss_det, parts = criterion(det, targets)
                losses = {"det": loss_det}
                if out.view_logits is not None:
                    losses["cls"] = view_loss(out.view_logits.float(), views)
                due = ni % p.diagnostics_every == 0
                null: dict[str, float] = {}
                two_halves = images.shape[0] >= 2
                balancer.grad_scale = scale = precision.scale  # read once: a GPU sync under fp16
                if due and trunk and two_halves and has_shared_trunk(losses, out):
                    null = null_reference(
                        half_batch_losses(criterion, det, targets), trunk,
                        last_shared_weight(model), scale=scale,
                    )  # fmt: skip
                record = balancer.step(losses, out, model, diagnostics_due=due)
                if ni - last_opt_step >= accumulate:
                    precision.unscale_(optimizer)
                    for group in clip_groups:
                        torch.nn.utils.clip_grad_norm_(group, max_norm=p.grad_clip)
                    precision.step(optimizer)
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update(model)
                    last_opt_step = ni
                weights, effective = record.weights, record.effective
                row = {
                    "epoch": epoch,
                    "step": ni,
                    "lr": optimizer.param_groups[1]["lr"],
                    "loss_det": float(loss_det.detach()),
                    "loss_cls": float(losses["cls"].detach()) if "cls" in losses else float("nan"),
                    "loss_box": parts["box"],
                    "loss_obj": parts["obj"],
                    "loss_class": parts["class"],
                    "weight_det": weights.get("det", float("nan")),
                    "weight_cls": weights.get("cls", float("nan")),
                    "eff_weight_det": effective.get("det", float("nan")),
                    "eff_weight_cls": effective.get("cls", float("nan")),
                    **_info_values(record.info, ni),
                }
                if not np.isfinite(row["loss_det"]):
                    raise FloatingPointError(f"non-finite detection loss at step {ni}: {row}")
                step_rows.append(row)
                for diag in _with_null(record.diagnostics, null):
                    diag_rows.append({"epoch": epoch, "step": ni, **diag})
                bar.update(1)
                batches_run += 1
                if stop.requested or (stop_after_batches and batches_run >= stop_after_batches):
                    save(epoch, i + 1)
                    raise TrainingInterrupted(
                        f"stopped at epoch {epoch} batch {i + 1} (checkpoint saved): re-run"
                    )
            bar.close()
            rows = [r for r in step_rows if r["epoch"] == epoch]
            summary = {k: float(np.mean([r[k] for r in rows])) for k in EPOCH_COLUMNS[2:-1]}
            epoch_rows.append(
                {"epoch": epoch, "lr": optimizer.param_groups[1]["lr"], **summary,
                 "seconds": time.perf_counter() - started}
            )  # fmt: skip
            LOG.info(
                "epoch %d/%d det %.4f cls %.4f w_det %.4f w_cls %.4f applied %.4f/%.4f (%.1f s)",
                epoch + 1, p.epochs, summary["loss_det"], summary["loss_cls"],
                summary["weight_det"], summary["weight_cls"], summary["eff_weight_det"],
                summary["eff_weight_cls"], epoch_rows[-1]["seconds"],
            )  # fmt: skip
            done = epoch + 1 - start_epoch
            eta = (time.perf_counter() - run_started) / done * (p.epochs - epoch - 1)
            say(
                "train",
                f"{p.experiment} seed {p.seed}: epoch {epoch + 1}/{p.epochs} "
                f"det {summary['loss_det']:.3f} cls {summary['loss_cls']:.3f} "
                f"({duration(epoch_rows[-1]['seconds'])}, ETA {duration(eta)})",
            )
            save(epoch + 1, 0)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    final = ema.module if ema is not None else model
    save_weights(final, p, paths.weights)
    write_csv(step_rows, paths.steps_csv, STEP_COLUMNS)
    write_csv(epoch_rows, paths.epochs_csv, EPOCH_COLUMNS)
    write_csv(diag_rows, paths.diagnostics_csv, DIAGNOSTIC_COLUMNS)
    ckpt.remove_checkpoints(paths.checkpoint_dir)
    return {"parameters": count_parameters(model), "steps": len(step_rows)}


def save_weights(model: nn.Module, params: TrainParams, path: Path) -> None:
    """Final (EMA) weights with the model description needed to rebuild it."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model": {
                    "variant": params.model,
                    "scale": params.scale,
                    "nc": len(params.class_names),
                    "n_views": len(params.view_names),
                    "attach": params.attach_layer,
                    "dropout": params.cls_dropout,
                },
                "params": asdict(params),
            },
            tmp,
        )


def load_weights(path: Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained model from ``weights.pt`` (safe ``weights_only`` loading)."""
    state = torch.load(path, map_location=device, weights_only=True)
    desc = state["model"]
    model = build_model(
        desc["variant"], desc["scale"], desc["nc"], desc["n_views"], desc["attach"],
        desc["dropout"],
    )  # fmt: skip
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state["params"]
