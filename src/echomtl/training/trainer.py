"""The training loop: YOLOv5 v7.0 recipe, a loss balancer, exact resume.

Every epoch drops its last partial batch: the YOLOv5 loss is multiplied by the batch size, so a
4-image remainder of a 16-image batch logs a detection loss a quarter of normal and feeds that to
GradNorm's loss ratios. The order is reshuffled each epoch, so every image is still seen.

Reproducibility rests on three choices: every source of randomness is seeded from (seed, epoch)
or saved in the checkpoint (the global torch RNG that dropout uses); the batch order of an epoch is
a function of (seed, epoch) alone, so a run resumed mid-epoch sees the same batches; and pending
accumulated gradients are saved with the checkpoint, so resuming between two optimizer steps loses
nothing. A killed run therefore ends with the same weights as an uninterrupted one.

The run's state is one object, ``echomtl.training.state.TrainState``, which is also the resume
checkpoint; ``train`` is the loop over epochs and batches: the schedule (``optim.Schedule``), the
forward pass and the balancer's step (``train_step``, which hands the balancer the null
reference's half-batch losses), the optimizer step, the logs.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import signal
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from echomtl.atomic import atomic_path
from echomtl.balancing import StepRecord
from echomtl.balancing.base import DIAGNOSTIC_KEYS
from echomtl.console import duration, say
from echomtl.data.cache import load_cache
from echomtl.data.dataset import CachedDataset, collate
from echomtl.losses import YoloLoss, view_loss
from echomtl.methods import model_variant
from echomtl.models.multitask import build_model, count_parameters
from echomtl.study import TrainParams
from echomtl.training import checkpoint as ckpt
from echomtl.training.machine import MACHINE_COLUMNS, this_machine
from echomtl.training.optim import Schedule
from echomtl.training.runlog import progress, write_csv
from echomtl.training.state import TrainState

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
#: An epoch's means of its steps' values.
EPOCH_MEANS = [
    "loss_det", "loss_cls", "loss_box", "loss_obj", "loss_class",
    "weight_det", "weight_cls", "eff_weight_det", "eff_weight_cls",
]  # fmt: skip
#: What an epoch cost, measured by the process that ran it (the paper's cost table): wall
#: ``seconds`` over the ``batches`` and ``optimizer_steps`` this process timed (a resumed epoch
#: times only the batches after the resume point), and the peak memory so far: the process's
#: resident set size high-water mark (``getrusage``), and on CUDA the most memory torch had
#: allocated (empty on CPU). A resumed run restarts both peaks; the run's peak is the maximum.
EPOCH_COST = ["seconds", "batches", "optimizer_steps", "peak_rss_mib", "cuda_peak_mib"]
#: ... and the machine that ran the epoch (:data:`echomtl.training.machine.MACHINE_COLUMNS`):
#: the cost table and the provenance record name the hardware the runs trained on from these.
EPOCH_COLUMNS = ["epoch", "lr", *EPOCH_MEANS, *EPOCH_COST, *MACHINE_COLUMNS]
DIAGNOSTIC_COLUMNS = ["epoch", "step", *DIAGNOSTIC_KEYS, *GRADNORM_COLUMNS]


#: Where a shared-trunk run keeps its weights for the accumulated-gradient interference job:
#: when warm-up ends, at half of the schedule, and at the end.
SNAPSHOT_POINTS = ("warmup", "middle", "end")


def snapshot_iterations(n_warmup: int, total: int) -> dict[str, int]:
    """The iteration (micro-batch index) at whose start each point but ``end`` is taken."""
    return {"warmup": min(n_warmup, total - 1), "middle": total // 2}


@dataclass
class RunPaths:
    train_cache: Path
    weights: Path
    steps_csv: Path
    epochs_csv: Path
    diagnostics_csv: Path
    checkpoint_dir: Path
    pretrained: Path | None = None  # the checkpoint file of a pretrained start
    #: the run's weight snapshots (``SNAPSHOT_POINTS``); None: not written
    snapshots: Path | None = None
    #: the training images of the run whose iterations this one matches (a split variant
    #: trains as many steps as its study run: :func:`run_length`); None: its own epochs
    match_images: int | None = None


def run_length(
    epochs: int, batch_size: int, n_images: int, match_images: int | None = None
) -> tuple[int, int]:
    """``(epochs, iterations)`` of a run: ``epochs`` of full batches of its own images, or the
    iterations of a run of ``match_images`` images, in as many epochs as they need (the last one
    cut short; the learning-rate schedule spans those epochs)."""
    per_epoch = n_images // batch_size
    if match_images is None:
        return epochs, per_epoch * epochs
    total = (match_images // batch_size) * epochs
    return math.ceil(total / per_epoch), total


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


def _info_values(info: dict[str, float], step: int) -> dict[str, float]:
    unknown = sorted(set(info) - set(INFO_COLUMNS))
    if unknown:
        raise KeyError(f"step {step}: balancer logged {unknown}, not columns of steps.csv")
    return dict(info)


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
    machine = this_machine(dev)
    p = params
    seed_everything(p.seed)
    cache = load_cache(paths.train_cache)
    dataset = CachedDataset(cache, augment=p.augment, hyp=p.hyp, seed=p.seed)
    n_images = len(dataset)
    n_epochs, total = run_length(p.epochs, p.batch_size, n_images, paths.match_images)
    schedule = Schedule(
        p.hyp, n_epochs, p.batch_size, p.nominal_batch, n_images // p.batch_size, p.cos_lr,
        p.warmup_min_iterations,
    )  # fmt: skip
    run = TrainState.create(p, dev, schedule.weight_decay, paths.pretrained)
    # no detection loss for the view classifier alone (it has no detector)
    criterion = YoloLoss(run.model.detect, p.imgsz, p.hyp) if hasattr(run.model, "detect") else None
    if run.resume(paths.checkpoint_dir):
        LOG.info("resumed at epoch %d batch %d", run.epoch, run.batch)
    else:
        LOG.info(
            "training %s seed %d: %s %s (%d parameters), %d images, %d epochs, %d steps",
            p.experiment, p.seed, p.model, p.scale, count_parameters(run.model), n_images,
            n_epochs, total,
        )  # fmt: skip
    start_epoch, start_batch = run.epoch, run.batch
    take = model_variant(p.model).shares_gradients and paths.snapshots is not None
    points = snapshot_iterations(schedule.n_warmup, total) if take else {}

    stop = _StopRequest()
    previous_handler = signal.signal(signal.SIGTERM, stop)
    batches_run = 0
    run_started = time.perf_counter()
    try:
        for epoch in range(start_epoch, n_epochs):
            run.model.train()
            dataset.set_epoch(epoch)
            batches = batch_order(n_images, p.batch_size, p.seed, epoch)
            batches = batches[: total - schedule.batches_per_epoch * epoch]  # the last one: cut
            first = start_batch if epoch == start_epoch else 0
            started = time.perf_counter()
            bar = progress(len(batches) - first, f"{p.experiment} epoch {epoch + 1}/{n_epochs}")
            loader = epoch_loader(dataset, batches[first:], workers, dev)
            optimizer_steps = 0
            for i, (images, targets, views, _) in enumerate(loader, start=first):
                ni = i + schedule.batches_per_epoch * epoch
                accumulate = schedule.apply(run.optimizer, ni, epoch)
                images = images.to(dev, non_blocking=True)
                targets, views = targets.to(dev, non_blocking=True), views.to(dev)
                due = ni % p.diagnostics_every == 0
                for point in [k for k, at in points.items() if at == ni and k not in run.snapshots]:
                    run.snapshot(point, ni)
                losses, parts, record = train_step(run, criterion, images, targets, views, due)
                if ni - run.last_opt_step >= accumulate:
                    run.optimizer_step(ni, p.grad_clip)
                    optimizer_steps += 1
                log_step(run, epoch, ni, losses, parts, record)
                bar.update(1)
                batches_run += 1
                if stop.requested or (stop_after_batches and batches_run >= stop_after_batches):
                    run.save(paths.checkpoint_dir, epoch, i + 1)
                    raise TrainingInterrupted(
                        f"stopped at epoch {epoch} batch {i + 1} (checkpoint saved): re-run"
                    )
            bar.close()
            cost = {
                "seconds": time.perf_counter() - started,
                "batches": len(batches) - first,
                "optimizer_steps": optimizer_steps,
                **peak_memory(dev),
                **machine,
            }
            summary = log_epoch(run, epoch, cost)
            seconds = run.epochs[-1]["seconds"]
            LOG.info(
                "epoch %d/%d det %.4f cls %.4f w_det %.4f w_cls %.4f applied %.4f/%.4f (%.1f s)",
                epoch + 1, n_epochs, summary["loss_det"], summary["loss_cls"],
                summary["weight_det"], summary["weight_cls"], summary["eff_weight_det"],
                summary["eff_weight_cls"], seconds,
            )  # fmt: skip
            done = epoch + 1 - start_epoch
            eta = (time.perf_counter() - run_started) / done * (n_epochs - epoch - 1)
            say(
                "train",
                f"{p.experiment} seed {p.seed}: epoch {epoch + 1}/{n_epochs} "
                f"det {summary['loss_det']:.3f} cls {summary['loss_cls']:.3f} "
                f"({duration(seconds)}, ETA {duration(eta)})",
            )
            run.save(paths.checkpoint_dir, epoch + 1, 0)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    save_weights(run.ema.module if run.ema is not None else run.model, p, paths.weights)
    if paths.snapshots is not None:
        if take:
            run.snapshot("end", total)
        save_snapshots(run.snapshots, p, paths.snapshots)
    write_csv(run.steps, paths.steps_csv, STEP_COLUMNS)
    write_csv(run.epochs, paths.epochs_csv, EPOCH_COLUMNS)
    write_csv(run.diagnostics, paths.diagnostics_csv, DIAGNOSTIC_COLUMNS)
    ckpt.remove_checkpoints(paths.checkpoint_dir)
    return {"parameters": count_parameters(run.model), "steps": len(run.steps)}


def train_step(
    run: TrainState,
    criterion: YoloLoss | None,
    images: torch.Tensor,
    targets: torch.Tensor,
    views: torch.Tensor,
    diagnostics_due: bool,
) -> tuple[dict[str, torch.Tensor], dict[str, float], StepRecord]:
    """Forward, the losses, and the balancer's backward (into ``.grad``): ``(losses, parts,
    record)``. On diagnostic steps the balancer also measures the null reference on the
    detection losses of the batch's two halves. ``criterion`` is None for a model without a
    detector (view_only): its only loss is the view loss, and ``parts`` are NaN."""
    with run.precision.autocast():
        out = run.model(images)
    # the losses in float32 (module docstring of echomtl.training.precision)
    losses: dict[str, torch.Tensor] = {}
    parts = dict.fromkeys(("box", "obj", "class"), float("nan"))
    halves = None
    if criterion is not None:
        det = [d.float() for d in out.det]
        losses["det"], parts = criterion(det, targets)
        if images.shape[0] >= 2:
            halves = partial(half_batch_losses, criterion, det, targets)
    if out.view_logits is not None:
        losses["cls"] = view_loss(out.view_logits.float(), views)
    run.balancer.grad_scale = run.precision.scale  # read once: a GPU sync under fp16
    record = run.balancer.step(losses, out, run.model, diagnostics_due, halves=halves)
    return losses, parts, record


def log_step(
    run: TrainState,
    epoch: int,
    step: int,
    losses: dict[str, torch.Tensor],
    parts: dict[str, float],
    record: StepRecord,
) -> None:
    """The step's row of ``steps.csv`` and its rows of ``diagnostics.csv``."""
    nan = float("nan")
    weights, effective = record.weights, record.effective
    row = {
        "epoch": epoch,
        "step": step,
        "lr": run.optimizer.param_groups[1]["lr"],
        "loss_det": float(losses["det"].detach()) if "det" in losses else nan,
        "loss_cls": float(losses["cls"].detach()) if "cls" in losses else nan,
        "loss_box": parts["box"],
        "loss_obj": parts["obj"],
        "loss_class": parts["class"],
        "weight_det": weights.get("det", nan),
        "weight_cls": weights.get("cls", nan),
        "eff_weight_det": effective.get("det", nan),
        "eff_weight_cls": effective.get("cls", nan),
        **_info_values(record.info, step),
    }
    for task, column in (("det", "loss_det"), ("cls", "loss_cls")):
        if task in losses and not np.isfinite(row[column]):
            raise FloatingPointError(f"non-finite {column} at step {step}: {row}")
    run.steps.append(row)
    for diag in record.diagnostics:
        run.diagnostics.append({"epoch": epoch, "step": step, **diag})


def peak_memory(device: torch.device) -> dict[str, float | None]:
    """The process's peak resident set size so far (MiB; Linux reports ``ru_maxrss`` in KiB)
    and, on CUDA, the most memory torch has allocated on the device (MiB; None on CPU)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cuda = None
    if device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2.0**20
    return {"peak_rss_mib": rss, "cuda_peak_mib": cuda}


def log_epoch(run: TrainState, epoch: int, cost: dict[str, Any]) -> dict[str, float]:
    """The epoch's row of ``epochs.csv``: means of its steps (:data:`EPOCH_MEANS`), what it
    cost (:data:`EPOCH_COST`) and on which machine (``MACHINE_COLUMNS``); returns the means."""
    rows = [r for r in run.steps if r["epoch"] == epoch]
    summary = {k: float(np.mean([r[k] for r in rows])) for k in EPOCH_MEANS}
    lr = run.optimizer.param_groups[1]["lr"]
    run.epochs.append({"epoch": epoch, "lr": lr, **summary, **cost})
    return summary


def save_weights(model: nn.Module, params: TrainParams, path: Path) -> None:
    """Final (EMA) weights with the model description needed to rebuild it."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "model": _model_description(params),
                "params": asdict(params),
            },
            tmp,
        )


def save_snapshots(snapshots: dict[str, dict], params: TrainParams, path: Path) -> None:
    """The run's snapshots with the model description (as ``save_weights``); empty for a run
    without a shared trunk (nothing to measure interference on)."""
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": _model_description(params),
                "params": asdict(params),
                "points": {k: snapshots[k] for k in SNAPSHOT_POINTS if k in snapshots},
            },
            tmp,
        )


def _model_description(params: TrainParams) -> dict[str, Any]:
    return {
        "variant": params.model,
        "scale": params.scale,
        "nc": len(params.class_names),
        "n_views": len(params.view_names),
        "attach": params.attach_layer,
        "dropout": params.cls_dropout,
    }


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
