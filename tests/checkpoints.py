"""Checkpoints the tests build: release-style YOLOv5 files made of stub classes named like
YOLOv5's (``models.yolo.Model``, ``models.common.Conv``, ...), so that no test needs the GPL-3.0
official file, and the files the workflow's dry-runs give ``model.weights``."""

from __future__ import annotations

import functools
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from echomtl.models import blocks
from echomtl.models.yolo import SCALES, Detect, YoloV5


def _stub_modules() -> dict[str, types.ModuleType]:
    """Modules ``models.common`` and ``models.yolo`` with classes named like YOLOv5's."""
    common, yolo = types.ModuleType("models.common"), types.ModuleType("models.yolo")
    for cls in (blocks.Conv, blocks.Bottleneck, blocks.C3, blocks.SPPF, blocks.Concat):
        setattr(common, cls.__name__, type(cls.__name__, (cls,), {"__module__": "models.common"}))
    yolo.Detect = type("Detect", (Detect,), {"__module__": "models.yolo"})
    for name in ("Model", "SegmentationModel", "ClassificationModel"):
        setattr(yolo, name, type(name, (nn.Module,), {"__module__": "models.yolo"}))
    package = types.ModuleType("models")
    package.common, package.yolo = common, yolo
    return {"models": package, "models.common": common, "models.yolo": yolo}


def make_checkpoint(
    path: Path, scale: str = "n", nc: int = 80, model_class: str = "Model", seed: int = 0
) -> YoloV5:
    """A release-style file: a whole stub ``models.yolo.<model_class>`` pickled in fp16."""
    torch.manual_seed(seed)
    source = YoloV5(scale, nc)
    for module in source.modules():  # a little variety in the batch-norm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    modules = _stub_modules()
    saved = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, module in modules.items():
            patch.setitem(sys.modules, name, module)
        copy = YoloV5(scale, nc)
        copy.load_state_dict(source.state_dict())
        for module in copy.modules():
            stub = getattr(modules["models.common"], type(module).__name__, None)
            if type(module).__name__ == "Detect":
                stub = modules["models.yolo"].Detect
            if stub is not None:
                module.__class__ = stub
        model = getattr(modules["models.yolo"], model_class)()
        model.model = nn.Sequential(*copy.model)
        depth, width = SCALES[scale]
        model.yaml = {"nc": nc, "depth_multiple": depth, "width_multiple": width}
        model.register_buffer("unused", torch.zeros(1), persistent=False)
        model.stride = torch.tensor([8.0, 16.0, 32.0])
        model.half()
        saved = {"epoch": -1, "best_fitness": None, "model": model, "ema": None, "date": "t"}
        torch.save(saved, path)
    return source


@functools.cache
def stub_weights_env() -> dict[str, str]:
    """``YOLOV5N_WEIGHTS``/``YOLOV5S_WEIGHTS`` naming stub checkpoints of those scales, for the
    shipped configs' dry-runs (they name their checkpoint through these variables)."""
    folder = Path(tempfile.mkdtemp(prefix="echomtl-stub-weights-"))
    env = {}
    for scale in ("n", "s"):
        path = folder / f"yolov5{scale}.pt"
        make_checkpoint(path, scale=scale)
        env[f"YOLOV5{scale.upper()}_WEIGHTS"] = str(path)
    return env
