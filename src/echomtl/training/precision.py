"""Mixed precision for training (``train.amp``): the autocast dtype and, for fp16, a loss scaler.

- ``fp32``: float32 throughout, no autocast. On CUDA, TF32 is switched off too (cuDNN allows it
  for convolutions by default), so that ``fp32`` means the arithmetic its name says. (Not
  ``off``: YAML reads an unquoted ``off`` as the boolean false.)
- ``bf16``: the forward pass under ``torch.autocast`` in bfloat16. bfloat16 has float32's exponent
  range, so gradients cannot underflow and no scaler is used. Runs on CPU as well (the tests).
- ``fp16``: autocast in float16 with a dynamic ``torch.amp.GradScaler``: the backward runs on the
  loss times the scale (float16 gradients would otherwise underflow), the optimizer step on the
  unscaled gradients, and a step whose scaled gradients overflowed is skipped while the scale
  halves (the scaler's own rule).

The losses are computed outside autocast, in float32, from the predictions cast back to float32:
the target assignment and the IoU of the box loss are then as exact as without mixed precision.

Every quantity a balancer reports (GradNorm's ``G_i``, the gradient diagnostics) is computed on
UNSCALED gradients: the trainer hands the current scale to the balancer (``Balancer.grad_scale``),
which multiplies only what it back-propagates and divides what it measures
(``echomtl.balancing.base``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

#: The values of ``train.amp``.
AMP_MODES = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """One training run's precision policy: autocast context, scale, optimizer step."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"train.amp must be one of {AMP_MODES}, got {mode!r}")
        self.mode = mode
        self.device_type = device.type
        self.dtype = _DTYPES.get(mode)
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None
        if self.scaler is not None:
            # the balancers multiply by the float ``scale`` themselves instead of calling
            # scaler.scale(loss), which is what would create the scaler's state on the device
            self.scaler.scale(torch.zeros((), device=device))
        if device.type == "cuda" and mode == "fp32":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass's context: autocast in the run's dtype, or nothing for ``fp32``."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            yield

    @property
    def scale(self) -> float:
        """The factor the backward multiplies the loss by (1.0 unless fp16)."""
        return 1.0 if self.scaler is None else float(self.scaler.get_scale())

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the accumulated gradients by the scale (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The optimizer step; False when the scaler skipped it (inf/NaN in the gradients)."""
        if self.scaler is None:
            optimizer.step()
            return True
        before = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        # the scaler lowers its scale exactly when it skipped the step
        return self.scaler.get_scale() >= before

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (its current scale and growth counter): resume is exact."""
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # train.amp is part of the run's fingerprint: a checkpoint of another mode never loads
        if self.scaler is not None:
            self.scaler.load_state_dict(state)
