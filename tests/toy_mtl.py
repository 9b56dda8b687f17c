"""A toy two-task model with the ModelOutput contract, shared by the balancing tests.

stem (e, read by the detection head only, like YOLO layers 4/6) -> last shared conv W + BN + SiLU
= f; the detection head reads alias a of f, the classification head alias b. Variants: "multitask",
"aliased" (e reaches detection through an alias too, so the features are not nested), "det_only",
"dual_backbone" (no shared trunk exposed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ToyOutput:
    det: Tensor
    view_logits: Tensor | None
    shared_features: list[Tensor] = field(default_factory=list)
    task_features: dict[str, Tensor] = field(default_factory=dict)


class ToyMTL(nn.Module):
    """stem (e, read by det only) -> W conv + BN + SiLU = f; det reads alias a, cls alias b."""

    def __init__(self, variant: str = "multitask") -> None:
        super().__init__()
        self.variant = variant
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU())
        self.last = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.last_bn = nn.BatchNorm2d(6)
        self.det_head = nn.Conv2d(10, 5, 1)
        self.cls_head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> ToyOutput:
        e = self.stem(x)
        f = F.silu(self.last_bn(self.last(e)))
        if self.variant == "det_only":
            return ToyOutput(self.det_head(torch.cat([f, e], 1)), None)
        a, b = f.view_as(f), f.view_as(f)
        skip = e.view_as(e) if self.variant == "aliased" else e  # "aliased": features not nested
        det = self.det_head(torch.cat([a, skip], 1))
        logits = self.cls_head(b.mean((2, 3)))
        if self.variant == "dual_backbone":
            return ToyOutput(det, logits)
        return ToyOutput(det, logits, [skip, f], {"det": a, "cls": b})

    def shared_parameters(self) -> list[nn.Parameter]:
        if self.variant not in ("multitask", "aliased"):
            return []
        return [*self.stem.parameters(), *self.last.parameters(), *self.last_bn.parameters()]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list((self.det_head if task == "det" else self.cls_head).parameters())

    @property
    def last_shared_weight(self) -> nn.Parameter | None:
        return self.last.weight if self.variant in ("multitask", "aliased") else None
