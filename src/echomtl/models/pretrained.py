"""Official YOLOv5 release checkpoints, read offline without running what their pickle names.

Why this module exists: a YOLOv5 ``.pt`` release file (v6.0 to v7.0) pickles whole
``models.yolo.Model`` objects. The ordinary ``torch.load`` imports the YOLOv5 source tree to rebuild
them and calls whatever the pickle names, so a crafted file runs arbitrary code. Here the file is
read by torch's ``weights_only`` unpickler, which rebuilds tensors and storages itself and calls
nothing it does not allow. Each class the file names is first checked against an allow-list of
module prefixes (``ALLOWED_PREFIXES``: the YOLOv5 source tree's ``models.*`` and torch's layer
classes); an allowed class is handed to the unpickler as an inert ``CheckpointObject``, a record of
the class's name and the state the pickle gives it. Any other global (``os.system``,
``builtins.eval``, ...) stops the load before unpickling starts, naming the file and the global.

The records are then walked like ``nn.Module.state_dict`` walks modules (``_parameters``,
persistent ``_buffers``, ``_modules``), which gives the official ``model.<i>.*`` keys. Those map
onto the project's layers (``echomtl.models.yolo`` builds the same layer table with the same
attribute names): ``model.<i>.*`` goes to ``detector.model.<i>.*`` and, for the dual backbone's
separate classifier, to ``backbone.model.<i>.*`` (its layers ``0..attach`` are the detector's).
A tensor transfers when its shape matches, as the official ``intersect_dicts`` does; the anchors
never transfer (the project's own anchors, as the official transfer excludes them when a model is
built from its config). Everything else keeps the fresh model's initialisation, in particular the
Detect output convolutions with YOLOv5's bias priors for the new class count, and the view head.
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from echomtl.atomic import sha256_file
from echomtl.models.yolo import SCALES

LOG = logging.getLogger(__name__)

#: Module prefixes whose classes may appear in a checkpoint; each becomes an inert record. The
#: YOLOv5 source tree pickles ``models.*``; its PyPI package (``pip install yolov5``) pickles the
#: same classes as ``yolov5.models.*``.
ALLOWED_PREFIXES = ("models.", "yolov5.models.", "torch.nn.modules.")
PACKAGE_PREFIX = "yolov5."
#: Top-level model classes of YOLOv5 detection checkpoints (v6.x: Model; v7.0: DetectionModel).
DETECTION_MODELS = ("models.yolo.Model", "models.yolo.DetectionModel")
#: Classes that mark a checkpoint of another task, with the task's name.
OTHER_TASKS = {
    "models.yolo.SegmentationModel": "segmentation",
    "models.yolo.Segment": "segmentation",
    "models.common.Proto": "segmentation",
    "models.yolo.ClassificationModel": "classification",
    "models.common.Classify": "classification",
}
#: Networks of the project's models that start from the checkpoint (the view head does not).
PRETRAINED_NETWORKS = ("detector", "backbone")
_KEY = re.compile(rf"^({'|'.join(PRETRAINED_NETWORKS)})\.(model\.\d+\..+)$")
#: Official keys that never transfer: the project keeps its own anchors.
NEVER_TRANSFERRED = re.compile(r"^model\.\d+\.anchors$")


class CheckpointError(ValueError):
    """A file that is not a usable YOLOv5 detection checkpoint; the message names the file."""


class CheckpointObject:
    """Inert stand-in for an object of a class a checkpoint names: the name and its state only.

    Creating one runs no code of the named class; ``args`` and ``state`` are what the pickle
    passed to the constructor and to ``__setstate__``.
    """

    qualname: ClassVar[str] = ""

    def __new__(cls, *args: Any) -> CheckpointObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any) -> None:  # REDUCE calls the class: nothing to run
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"value": state}


@cache
def _record_class(qualname: str) -> type[CheckpointObject]:
    """One record class per qualified name (the unpickler matches classes by identity); the
    record's name is the source tree's (``yolov5.models.yolo.X`` -> ``models.yolo.X``)."""
    name = (
        qualname.removeprefix(PACKAGE_PREFIX) if qualname.startswith("yolov5.models.") else qualname
    )
    return type(qualname.rsplit(".", 1)[-1], (CheckpointObject,), {"qualname": name})


@dataclass
class Checkpoint:
    """What a release file holds for transfer: its tensors under the official keys."""

    path: Path
    sha256: str
    scale: str
    model_class: str
    source: str  # "ema" or "model"
    tensors: dict[str, Tensor]
    nc: int
    anchors: Tensor | None = None  # the file's anchors, in grid units per level
    strides: list[float] = field(default_factory=list)
    date: str | None = None  # the file's own ``date`` entry (release files carry one)

    def provenance(self) -> dict[str, Any]:
        """What the paper and a run's metadata say of the file."""
        return {
            "file": self.path.name, "sha256": self.sha256, "date": self.date,
            "model_class": self.model_class, "scale": self.scale, "tensors": len(self.tensors),
        }  # fmt: skip


def _unpickle(path: Path) -> Any:
    """The file's object, with every allowed class as an inert record; refuses anything else."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a torch checkpoint (expected the zip archive torch.save writes, as in "
            "YOLOv5 release .pt files); the file is truncated, corrupt or of another format"
        )
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as error:  # noqa: BLE001 - any unreadable archive gets the same message
        raise CheckpointError(
            f"{path}: cannot read the checkpoint's pickle ({error}); the file is truncated or "
            "corrupt"
        ) from error
    refused = sorted(n for n in named if not n.startswith(ALLOWED_PREFIXES))
    if refused:
        raise CheckpointError(
            f"{path}: the pickle names {', '.join(refused)}, outside the allow-list of a YOLOv5 "
            f"checkpoint (classes under {', '.join(ALLOWED_PREFIXES)}); refused, nothing was run"
        )
    records = [(_record_class(n), n) for n in named]
    try:
        with torch.serialization.safe_globals(records):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - the unpickler's refusal or a damaged archive
        raise CheckpointError(
            f"{path}: not loadable as a YOLOv5 checkpoint ({type(error).__name__}: {error})"
        ) from error


def _tensors(obj: CheckpointObject, prefix: str, out: dict[str, Tensor]) -> None:
    """``state_dict`` of a module record: parameters, persistent buffers, then children."""
    state = obj.state
    for name, tensor in (state.get("_parameters") or {}).items():
        if tensor is not None:
            out[prefix + name] = tensor
    transient = state.get("_non_persistent_buffers_set") or set()
    for name, tensor in (state.get("_buffers") or {}).items():
        if tensor is not None and name not in transient:
            out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, CheckpointObject):
            _tensors(child, f"{prefix}{name}.", out)


def _classes(obj: CheckpointObject) -> set[str]:
    found = {obj.qualname}
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, CheckpointObject):
            found |= _classes(child)
    return found


def _scale_of(path: Path, model: CheckpointObject) -> str:
    """The scale whose depth and width multiples the checkpoint's model description gives."""
    spec = model.state.get("yaml")
    if not isinstance(spec, dict) or "depth_multiple" not in spec or "width_multiple" not in spec:
        raise CheckpointError(
            f"{path}: the model has no YOLOv5 description (yaml with depth_multiple and "
            "width_multiple), so its scale cannot be told"
        )
    multiples = (float(spec["depth_multiple"]), float(spec["width_multiple"]))
    for scale, known in SCALES.items():
        if all(abs(a - b) < 1e-6 for a, b in zip(multiples, known, strict=True)):
            return scale
    raise CheckpointError(
        f"{path}: depth_multiple {multiples[0]:g}, width_multiple {multiples[1]:g} is not a "
        f"scale this project builds (known: {', '.join(f'{s} {SCALES[s]}' for s in SCALES)})"
    )


def read_checkpoint(path: Path | str, scale: str | None = None) -> Checkpoint:
    """Read a YOLOv5 detection checkpoint's tensors (float32, under the official keys).

    ``scale``: the scale the study builds (config ``model.scale``); another one is an error.
    """
    path = Path(path)
    obj = _unpickle(path)
    if isinstance(obj, CheckpointObject) or not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: not a YOLOv5 checkpoint (expected a dict with a 'model' or 'ema' entry, "
            f"found {type(obj).__name__})"
        )
    source = "ema" if isinstance(obj.get("ema"), CheckpointObject) else "model"
    model = obj.get(source)
    if not isinstance(model, CheckpointObject):
        raise CheckpointError(
            f"{path}: not a YOLOv5 checkpoint (expected a model object under 'model' or 'ema', "
            f"found keys {', '.join(map(str, obj)) or 'none'})"
        )
    classes = _classes(model)
    other = sorted({OTHER_TASKS[c] for c in classes if c in OTHER_TASKS})
    if other:
        raise CheckpointError(
            f"{path}: a YOLOv5 {' and '.join(other)} checkpoint ({model.qualname}); expected a "
            f"detection checkpoint ({' or '.join(DETECTION_MODELS)}), e.g. yolov5n.pt"
        )
    if model.qualname not in DETECTION_MODELS:
        raise CheckpointError(
            f"{path}: the model is a {model.qualname or type(model).__name__}; expected a YOLOv5 "
            f"detection model ({' or '.join(DETECTION_MODELS)})"
        )
    found = _scale_of(path, model)
    if scale is not None and found != scale:
        raise CheckpointError(
            f"{path}: a yolov5{found} checkpoint, but config model.scale is {scale!r}: give the "
            f"yolov5{scale} file or set model.scale to {found!r}"
        )
    tensors: dict[str, Tensor] = {}
    _tensors(model, "", tensors)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    detect = _detect_record(model)
    nc = int(detect.state.get("nc", 0)) if detect is not None else 0
    stride = model.state.get("stride")
    return Checkpoint(
        path=path,
        sha256=sha256_file(path),
        scale=found,
        model_class=model.qualname,
        source=source,
        tensors=tensors,
        nc=nc,
        anchors=next((v for k, v in tensors.items() if NEVER_TRANSFERRED.match(k)), None),
        strides=[float(s) for s in stride] if isinstance(stride, Tensor) else [],
        date=str(obj["date"]) if isinstance(obj.get("date"), str) else None,
    )


def _detect_record(model: CheckpointObject) -> CheckpointObject | None:
    layers = (model.state.get("_modules") or {}).get("model")
    if not isinstance(layers, CheckpointObject):
        return None
    children = list((layers.state.get("_modules") or {}).values())
    last = children[-1] if children else None
    return last if isinstance(last, CheckpointObject) else None


@dataclass
class Transfer:
    """What a transfer did: per network, the official keys used and those that were not."""

    transferred: dict[str, list[str]]  # network -> official keys copied
    skipped: dict[str, dict[str, str]]  # network -> official key -> why not

    def count(self, network: str = "detector") -> int:
        return len(self.transferred.get(network, []))

    def summary(self) -> str:
        """One line per network: transferred/offered, and each tensor that did not transfer."""
        parts = []
        for network, keys in self.transferred.items():
            skipped = self.skipped.get(network, {})
            line = f"{network} {len(keys)}/{len(keys) + len(skipped)} tensors transferred"
            if skipped:
                line += "; not transferred: " + ", ".join(
                    f"{k} ({why})" for k, why in skipped.items()
                )
            parts.append(line)
        return "; ".join(parts)


def transfer(model: nn.Module, checkpoint: Checkpoint) -> Transfer:
    """Copy every checkpoint tensor whose shape matches into the model's pretrained networks.

    The detector of every variant, and the dual backbone's classifier backbone, take the
    official layer ``i`` from ``model.<i>.*``; the view head and everything whose shape depends on
    the class count keep the fresh model's initialisation.
    """
    own = model.state_dict()
    transferred: dict[str, list[str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    update: dict[str, Tensor] = {}
    networks = sorted(
        {m.group(1) for k in own if (m := _KEY.match(k))}, key=PRETRAINED_NETWORKS.index
    )
    for network in networks:
        transferred[network], skipped[network] = [], {}
        layers = {int(k.split(".")[2]) for k in own if k.startswith(f"{network}.model.")}
        for key, tensor in checkpoint.tensors.items():
            layer = int(key.split(".")[1]) if key.startswith("model.") else -1
            if layer not in layers:
                continue  # beyond this network's layers (the classifier backbone's 0..attach)
            target = f"{network}.{key}"
            if NEVER_TRANSFERRED.match(key):
                skipped[network][key] = "the project's own anchors"
            elif target not in own:
                skipped[network][key] = "no such tensor in the project's layer"
            elif own[target].shape != tensor.shape:
                skipped[network][key] = f"shape {list(tensor.shape)} vs {list(own[target].shape)}"
            else:
                update[target] = tensor.to(own[target].dtype)
                transferred[network].append(key)
    if not update:
        raise CheckpointError(
            f"{checkpoint.path}: no tensor of the checkpoint matches the model's layers"
        )
    model.load_state_dict(update, strict=False)
    return Transfer(transferred, skipped)


def load_pretrained(
    model: nn.Module, path: Path | str, scale: str, expected_sha256: str | None = None
) -> Transfer:
    """Read ``path`` and transfer it into ``model``; logs the count and what did not transfer.

    ``expected_sha256``: the digest the run's parameters recorded; a file that changed since
    (another file at the same path) stops the run instead of training from it.
    """
    checkpoint = read_checkpoint(path, scale)
    if expected_sha256 is not None and checkpoint.sha256 != expected_sha256:
        raise CheckpointError(
            f"{path}: SHA-256 {checkpoint.sha256} is not the run's {expected_sha256} (the file "
            "changed after the workflow read it): re-run the workflow"
        )
    result = transfer(model, checkpoint)
    LOG.info(
        "pretrained start from %s (%s, %s, sha256 %s): %s",
        checkpoint.path, checkpoint.model_class, checkpoint.source, checkpoint.sha256,
        result.summary(),
    )  # fmt: skip
    return result
