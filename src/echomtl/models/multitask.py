"""Multi-task YOLOv5 (detection + view classification) and its two comparison models.

- ``MultiTaskYolo``: one detector whose layers ``0..attach`` form the shared trunk; the
  classification head reads the attach layer's output. The attach output ``f`` is handed to the two
  branches as two distinct aliases (``f.view_as(f)``) so a balancer can hook each task's gradient
  at the shared feature separately.
- ``DetOnlyYolo``: the plain detector (no head, nothing shared).
- ``ViewOnlyYolo``: the view classifier alone: backbone layers ``0..attach`` of the same scale and
  the same head (the dual backbone's classifier on its own), the single-task view baseline.
- ``DualBackboneYolo``: a full detector plus a separate backbone (layers ``0..attach`` of the same
  scale) with the same head; no parameter shared.
- ``StopGradYolo`` (variant ``stopgrad``): the multi-task model whose head reads the DETACHED
  attach feature: the trunk is shared in the forward pass, but the classification gradient never
  reaches it, so the trunk trains exactly as the detector alone does.

``clip_groups()`` says which parameters are clipped together: one group for a network trained as
one (multitask, det_only), one per network for the controls (dual_backbone, stopgrad), so that a
control's classifier never shrinks its detector's step through a shared clipping norm.

All return ``ModelOutput`` (see docs/architecture.md, "Model output").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from echomtl.methods import MODEL_VARIANTS
from echomtl.models.blocks import C3, SPPF, Conv
from echomtl.models.yolo import (
    BACKBONE_END,
    Detect,
    LayerGraph,
    YoloV5,
    backbone_table,
    check_attach,
)

VARIANTS = tuple(MODEL_VARIANTS)
TASKS = ("det", "cls")


@dataclass
class ModelOutput:
    """What every model's forward returns.

    det: 3 raw tensors ``[B, na, ny, nx, 5 + nc]`` (P3, P4, P5), before sigmoid.
    view_logits: ``[B, n_views]`` or None (det_only).
    det is empty for the view classifier alone (view_only).
    shared_features: trunk outputs consumed by the task branches, in layer order (attach 9:
        outputs of layers 4, 6, 9); empty when nothing is shared.
    task_features: ``{"det": a, "cls": b}``, distinct aliases of the attach feature; ``a`` feeds
        the detection branch, ``b`` the classification head; empty when nothing is shared.
    """

    det: list[Tensor]
    view_logits: Tensor | None
    shared_features: list[Tensor] = field(default_factory=list)
    task_features: dict[str, Tensor] = field(default_factory=dict)


class ClassificationHead(nn.Module):
    """Global average pooling -> dropout -> linear: view logits from a feature map."""

    def __init__(self, c_in: int, n_views: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.drop = nn.Dropout(p=dropout)
        self.linear = nn.Linear(c_in, n_views)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, n_views]``."""
        return self.linear(self.drop(x.mean((2, 3))))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


def output_conv_weight(layer: nn.Module) -> nn.Parameter:
    """Weight of a block's last (output) convolution: Conv.conv, C3.cv3, SPPF.cv2."""
    if isinstance(layer, Conv):
        return layer.conv.weight
    if isinstance(layer, C3):
        return layer.cv3.conv.weight
    if isinstance(layer, SPPF):
        return layer.cv2.conv.weight
    raise TypeError(f"no output convolution for {type(layer).__name__}")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


class MultiTaskYolo(nn.Module):
    """Detector with a view-classification head on the output of layer ``attach``.

    Split: the trunk runs layers ``0..attach`` and keeps every output the later layers read
    (``shared_indices``; attach 9 -> [4, 6, 9]). The detection branch runs layers
    ``attach+1..24`` from those outputs with the attach output replaced by its ``"det"`` alias
    (skip outputs of earlier layers are passed as they are); the head reads the ``"cls"`` alias.
    """

    def __init__(
        self, scale: str, nc: int, n_views: int, attach: int = 9, dropout: float = 0.2
    ) -> None:
        super().__init__()
        check_attach(attach)
        self.scale, self.nc, self.n_views, self.attach = scale, nc, n_views, attach
        self.detector = YoloV5(scale, nc)
        self.head = ClassificationHead(self.detector.channels[attach], n_views, dropout)
        self.shared_indices = self.detector.consumed_by(attach + 1, attach)
        self._skip_indices = [j for j in self.shared_indices if j != attach]

    @property
    def detect(self) -> Detect:
        """The Detect module."""
        return self.detector.detect

    @property
    def last_shared_weight(self) -> nn.Parameter:
        """GradNorm's W: the weight of the output convolution of layer ``attach``."""
        return output_conv_weight(self.detector.model[self.attach])

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of layers ``0..attach`` (reached by both losses)."""
        return [p for m in self.detector.model[: self.attach + 1] for p in m.parameters()]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters reached by one task only: ``det`` layers attach+1..24, ``cls`` the head."""
        _check_task(task)
        if task == "det":
            return [p for m in self.detector.model[self.attach + 1 :] for p in m.parameters()]
        return list(self.head.parameters())

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """One network: clipped as one."""
        return [list(self.parameters())]

    def forward(self, x: Tensor) -> ModelOutput:
        """Shared trunk once, then the two branches on distinct aliases of the attach output."""
        g = self.detector
        saved: dict[int, Tensor] = {}
        f = g.run(x, 0, self.attach + 1, saved)
        f_det = f.view_as(f)
        f_cls = f.view_as(f)
        shared = [saved[j] for j in self._skip_indices]
        shared.append(f)
        saved[self.attach] = f_det
        det = g.run(f_det, self.attach + 1, len(g), saved)
        logits = self.head(f_cls)
        return ModelOutput(det, logits, shared, {"det": f_det, "cls": f_cls})

    def decode(self, det: list[Tensor]) -> Tensor:
        """See ``Detect.decode``."""
        return self.detect.decode(det)


class StopGradYolo(MultiTaskYolo):
    """The multi-task model with a stop-gradient before the head (see the module docstring).

    Exposes no shared trunk to the balancers (nothing receives both gradients), so they do a
    plain weighted backward; the detector (built first, like ``DetOnlyYolo``'s) and the head are
    clipped separately.
    """

    @property
    def last_shared_weight(self) -> None:
        """Nothing receives both gradients."""
        return None

    def shared_parameters(self) -> list[nn.Parameter]:
        """Nothing receives both gradients."""
        return []

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """``det``: the whole detector; ``cls``: the head."""
        _check_task(task)
        return list(self.detector.parameters()) if task == "det" else list(self.head.parameters())

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Detector and head clipped apart."""
        return [list(self.detector.parameters()), list(self.head.parameters())]

    def forward(self, x: Tensor) -> ModelOutput:
        """The detector as usual; the head on ``f.detach()``."""
        g = self.detector
        saved: dict[int, Tensor] = {}
        f = g.run(x, 0, self.attach + 1, saved)
        det = g.run(f, self.attach + 1, len(g), saved)
        return ModelOutput(det, self.head(f.detach()))


class _SeparateDetector(nn.Module):
    """Models with a detector of their own and no shared trunk (nothing for a balancer to share)."""

    detector: YoloV5

    @property
    def detect(self) -> Detect:
        """The Detect module."""
        return self.detector.detect

    @property
    def last_shared_weight(self) -> None:
        """Nothing is shared."""
        return None

    def shared_parameters(self) -> list[nn.Parameter]:
        """Nothing is shared."""
        return []

    def decode(self, det: list[Tensor]) -> Tensor:
        """See ``Detect.decode``."""
        return self.detect.decode(det)


class DetOnlyYolo(_SeparateDetector):
    """The plain YOLOv5 detector in the common interface (no head, nothing shared)."""

    def __init__(self, scale: str, nc: int) -> None:
        super().__init__()
        self.scale, self.nc = scale, nc
        self.detector = YoloV5(scale, nc)

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """One network: clipped as one."""
        return [list(self.parameters())]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """``det``: all parameters; ``cls``: none."""
        _check_task(task)
        return list(self.detector.parameters()) if task == "det" else []

    def forward(self, x: Tensor) -> ModelOutput:
        """Raw detection outputs only."""
        return ModelOutput(self.detector(x), None)


class DualBackboneYolo(_SeparateDetector):
    """A full detector and a separate classifier (backbone layers 0..attach + head); no sharing."""

    def __init__(
        self, scale: str, nc: int, n_views: int, attach: int = 9, dropout: float = 0.2
    ) -> None:
        super().__init__()
        check_attach(attach)
        self.scale, self.nc, self.n_views, self.attach = scale, nc, n_views, attach
        self.detector = YoloV5(scale, nc)
        self.backbone = LayerGraph(backbone_table(attach), scale, nc)
        self.head = ClassificationHead(self.backbone.channels[attach], n_views, dropout)

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """``det``: the detector; ``cls``: the second backbone and the head."""
        _check_task(task)
        if task == "det":
            return list(self.detector.parameters())
        return [*self.backbone.parameters(), *self.head.parameters()]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Detector and classifier apart: the classifier never scales the detector's step."""
        return [
            list(self.detector.parameters()),
            [*self.backbone.parameters(), *self.head.parameters()],
        ]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the detector and of the classifier (backbone + head)."""
        return {
            "detector": count_parameters(self.detector),
            "classifier": count_parameters(self.backbone) + count_parameters(self.head),
        }

    def forward(self, x: Tensor) -> ModelOutput:
        """Detector and classifier run independently on the same images."""
        det = self.detector(x)
        feat = self.backbone.run(x, 0, len(self.backbone), {})
        return ModelOutput(det, self.head(feat))


class ViewOnlyYolo(nn.Module):
    """The view classifier alone: backbone layers ``0..attach`` + the head, no detector.

    Built exactly as the dual backbone's classifier (``backbone`` takes the checkpoint's layers
    ``0..attach`` under a pretrained start), so it is the single-task view baseline on the same
    backbone, start and schedule as the multi-task model's view branch.
    """

    def __init__(
        self, scale: str, nc: int, n_views: int, attach: int = 9, dropout: float = 0.2
    ) -> None:
        super().__init__()
        check_attach(attach)
        self.scale, self.nc, self.n_views, self.attach = scale, nc, n_views, attach
        self.backbone = LayerGraph(backbone_table(attach), scale, nc)
        self.head = ClassificationHead(self.backbone.channels[attach], n_views, dropout)

    @property
    def last_shared_weight(self) -> None:
        """Nothing is shared."""
        return None

    def shared_parameters(self) -> list[nn.Parameter]:
        """Nothing is shared."""
        return []

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """``cls``: all parameters; ``det``: none."""
        _check_task(task)
        return list(self.parameters()) if task == "cls" else []

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """One network: clipped as one."""
        return [list(self.parameters())]

    def forward(self, x: Tensor) -> ModelOutput:
        """View logits only (``det`` empty)."""
        feat = self.backbone.run(x, 0, len(self.backbone), {})
        return ModelOutput([], self.head(feat))


def build_model(
    variant: str, scale: str, nc: int, n_views: int, attach: int = 9, dropout: float = 0.2
) -> nn.Module:
    """Model factory: ``variant`` in ``VARIANTS``."""
    if variant == "multitask":
        return MultiTaskYolo(scale, nc, n_views, attach, dropout)
    if variant == "det_only":
        return DetOnlyYolo(scale, nc)
    if variant == "view_only":
        return ViewOnlyYolo(scale, nc, n_views, attach, dropout)
    if variant == "dual_backbone":
        return DualBackboneYolo(scale, nc, n_views, attach, dropout)
    if variant == "stopgrad":
        return StopGradYolo(scale, nc, n_views, attach, dropout)
    raise ValueError(f"unknown model variant {variant!r}; expected one of {VARIANTS}")


__all__ = [
    "BACKBONE_END",
    "ClassificationHead",
    "DetOnlyYolo",
    "DualBackboneYolo",
    "ModelOutput",
    "MultiTaskYolo",
    "StopGradYolo",
    "ViewOnlyYolo",
    "build_model",
    "count_parameters",
    "output_conv_weight",
]
