"""One training run's state, which saves and loads itself as the resume checkpoint.

``TrainState`` holds everything a step changes: the model, its EMA, the optimizer, the
mixed-precision scaler, the balancer, the global torch RNG (dropout), the gradients accumulated
since the last optimizer step, the position of the next batch and the logged rows. Its
checkpoint's entries are listed once (``TrainState._entries``): ``state_dict`` and
``load_state_dict`` both read that list, in its order. The batch order and the augmentation are
functions of (seed, epoch, index), so they need no state (``echomtl.training.trainer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from echomtl.balancing import Balancer, build_balancer
from echomtl.models.multitask import build_model
from echomtl.models.pretrained import load_pretrained
from echomtl.training import checkpoint as ckpt
from echomtl.training.ema import ModelEMA
from echomtl.training.optim import build_optimizer
from echomtl.training.precision import Precision

if TYPE_CHECKING:
    from echomtl.study import TrainParams

Entry = tuple[Callable[[], Any], Callable[[Any], None]]
#: entries added to the checkpoint after its first version: a checkpoint without one still loads
#: (a run resumed from it keeps the entry's default, e.g. no snapshot taken before the resume)
ADDED_ENTRIES = ("snapshots",)


@dataclass
class TrainState:
    """The state of one run (module docstring); ``epoch``/``batch``: where it goes on."""

    fingerprint: str
    model: nn.Module
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    precision: Precision
    balancer: Balancer
    #: the parameters clipped together: one group per network (not saved: the model's own)
    clip_groups: list[list[nn.Parameter]]
    epoch: int = 0
    batch: int = 0
    last_opt_step: int = -1
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    #: the model's weights at the points of ``SNAPSHOT_POINTS`` reached so far (shared-trunk runs;
    #: the accumulated-gradient interference job reads them): ``{point: {"step", "weights",
    #: "state_dict"}}``, in the checkpoint so that a resumed run keeps them
    snapshots: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        p: TrainParams,
        device: torch.device,
        weight_decay: float,
        pretrained: Path | None = None,
    ) -> TrainState:
        """A fresh run: the model (random, or from ``pretrained``), its balancer and optimizer."""
        model = build_model(
            p.model, p.scale, len(p.class_names), len(p.view_names), p.attach_layer, p.cls_dropout
        )
        if p.init == "pretrained":
            if pretrained is None:
                raise ValueError(f"{p.experiment}: init 'pretrained' needs a checkpoint file")
            load_pretrained(model, pretrained, p.scale, p.weights_sha256)
        elif p.init != "scratch":
            raise ValueError(f"{p.experiment}: init {p.init!r} is not 'scratch' or 'pretrained'")
        model = model.to(device)
        balancer = build_balancer(p, device)
        precision = Precision(p.amp, device)
        extra = list(balancer.extra_parameters())
        for q in extra:
            q.data = q.data.to(device)
        optimizer = build_optimizer(model, p.hyp["lr0"], p.hyp["momentum"], weight_decay, extra)
        clip_groups = model.clip_groups()
        ema = ModelEMA(model) if p.ema else None
        fingerprint = ckpt.fingerprint(asdict(p))
        return cls(fingerprint, model, ema, optimizer, precision, balancer, clip_groups)

    # -- the checkpoint ----------------------------------------------------------------------
    def _entries(self) -> dict[str, Entry]:
        """The checkpoint's entries in order: key -> (what is saved, how it is loaded)."""
        model, ema = self.model, self.ema
        return {
            "fingerprint": (lambda: self.fingerprint, self._check_fingerprint),
            "epoch": self._int("epoch"),
            "batch": self._int("batch"),
            "last_opt_step": self._int("last_opt_step"),
            "model": (model.state_dict, model.load_state_dict),
            "optimizer": (self.optimizer.state_dict, self.optimizer.load_state_dict),
            "balancer": (self.balancer.state_dict, self.balancer.load_state_dict),
            "ema": (ema.state_dict, ema.load_state_dict) if ema is not None else (dict, _ignore),
            "grads": (lambda: _pending_grads(model), lambda grads: _restore_grads(model, grads)),
            "precision": (self.precision.state_dict, self.precision.load_state_dict),
            "torch_rng": (torch.get_rng_state, torch.set_rng_state),
            "steps": self._rows("steps"),
            "epochs": self._rows("epochs"),
            "diagnostics": self._rows("diagnostics"),
            "snapshots": self._rows("snapshots"),
        }

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint (every entry loads with ``torch.load(weights_only=True)``)."""
        return {key: save() for key, (save, _) in self._entries().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (this run's: the fingerprint must match)."""
        for key, (_, load) in self._entries().items():
            if key in state:
                load(state[key])
            elif key not in ADDED_ENTRIES:
                raise KeyError(f"the checkpoint lacks its entry {key!r}")

    def snapshot(self, point: str, step: int) -> None:
        """Keep the model's current weights (not the EMA's: the trained ones, whose gradients
        the interference job measures) and the effective task weights of the last step."""
        last = self.steps[-1] if self.steps else {}
        nan = float("nan")
        self.snapshots[point] = {
            "step": int(step),
            "weights": {t: float(last.get(f"eff_weight_{t}", nan)) for t in ("det", "cls")},
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
        }

    def save(self, directory: Path, epoch: int, batch: int) -> None:
        """Checkpoint the run, to go on at ``batch`` of ``epoch``."""
        self.epoch, self.batch = epoch, batch
        ckpt.save_checkpoint(self.state_dict(), directory)

    def resume(self, directory: Path) -> bool:
        """Load the newest valid checkpoint of this run from ``directory``; False if none."""
        state = ckpt.load_checkpoint(directory, self.fingerprint)
        if state is None:
            return False
        self.load_state_dict(state)
        return True

    def _int(self, name: str) -> Entry:
        return (lambda: getattr(self, name), lambda value: setattr(self, name, int(value)))

    def _rows(self, name: str) -> Entry:
        return (lambda: getattr(self, name), lambda rows: setattr(self, name, rows))

    def _check_fingerprint(self, value: str) -> None:
        if value != self.fingerprint:
            raise ValueError("the checkpoint belongs to another configuration")

    # -- the optimizer step ------------------------------------------------------------------
    def optimizer_step(self, iteration: int, grad_clip: float) -> None:
        """Unscale, clip each network to ``grad_clip``, step, zero the gradients, update the EMA."""
        self.precision.unscale_(self.optimizer)
        for group in self.clip_groups:
            torch.nn.utils.clip_grad_norm_(group, max_norm=grad_clip)
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.last_opt_step = iteration


def _ignore(value: Any) -> None:
    """Nothing to load (a run without EMA saves an empty entry)."""


def _pending_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: q.grad.detach().clone() for n, q in model.named_parameters() if q.grad is not None}


def _restore_grads(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        param.grad = grads[name].to(param.device) if name in grads else None
