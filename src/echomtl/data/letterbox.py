"""Letterboxing: fit an image into an S x S square, keeping its aspect ratio, and map boxes.

Like YOLOv5's ``letterbox(auto=False, scaleup=True)`` to a square: scale by
``ratio = min(S / w, S / h)``, resize, and pad the short side equally on both sides with grey 114.
Two deliberate differences from the reference, both so that one ``(ratio, pad_x, pad_y)`` describes
the transform *exactly* (``letterboxed = original * ratio + pad``, the cache contract):

* the padding offsets returned are the integer pixels actually added on the left/top (YOLOv5
  returns the half-pixel ``dw / 2`` while padding ``round(dw / 2 - 0.1)``);
* resizing is Pillow's bilinear filter (antialiased when shrinking, i.e. area-like; deterministic),
  not OpenCV's ``INTER_LINEAR``.

Coordinates are continuous pixel coordinates: pixel ``i`` spans ``[i, i + 1)``, so a box edge at
the image border is ``0`` or ``w``. The short side is rounded to whole pixels, so the effective
scale of that axis differs from ``ratio`` by at most half a pixel over the whole image.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from PIL import Image

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, int, int, int, int]:
    """Return ``(ratio, new_w, new_h, pad_x, pad_y)`` for a ``width x height`` image."""
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"bad sizes: image {width}x{height}, target {size}")
    ratio = min(size / width, size / height)
    new_w = min(size, max(1, int(round(width * ratio))))
    new_h = min(size, max(1, int(round(height * ratio))))
    pad_x = (size - new_w) // 2
    pad_y = (size - new_h) // 2
    return ratio, new_w, new_h, pad_x, pad_y


def letterbox(
    image: np.ndarray, size: int, pad_value: int = 114
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Letterbox an ``H x W x 3`` uint8 image into ``size x size x 3``.

    Returns ``(out, ratio, (pad_x, pad_y))`` with ``out_coord = coord * ratio + pad``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
    h, w = image.shape[:2]
    ratio, new_w, new_h, pad_x, pad_y = letterbox_geometry(w, h, size)
    if (new_w, new_h) != (w, h):
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    else:
        resized = image
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    out[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return out, float(ratio), (int(pad_x), int(pad_y))


def _offset(boxes: ArrayT, a: float, b: float) -> ArrayT:
    if isinstance(boxes, torch.Tensor):
        return torch.tensor([a, b, a, b], dtype=boxes.dtype, device=boxes.device)
    return np.array([a, b, a, b], dtype=boxes.dtype if boxes.dtype.kind == "f" else np.float64)


def boxes_to_letterbox(boxes_xyxy: ArrayT, ratio: float, pad: tuple[float, float]) -> ArrayT:
    """Map ``[..., 4]`` xyxy boxes from original pixels to letterboxed pixels."""
    if boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"expected [..., 4] xyxy boxes, got shape {tuple(boxes_xyxy.shape)}")
    if not isinstance(boxes_xyxy, torch.Tensor) and boxes_xyxy.dtype.kind != "f":
        boxes_xyxy = boxes_xyxy.astype(np.float64)
    return boxes_xyxy * ratio + _offset(boxes_xyxy, pad[0], pad[1])


def boxes_from_letterbox(
    boxes_xyxy: ArrayT,
    ratio: float,
    pad: tuple[float, float],
    clip_to: tuple[int, int] | None = None,
) -> ArrayT:
    """Inverse of :func:`boxes_to_letterbox`; ``clip_to=(width, height)`` clips to the image."""
    if boxes_xyxy.shape[-1] != 4:
        raise ValueError(f"expected [..., 4] xyxy boxes, got shape {tuple(boxes_xyxy.shape)}")
    if not isinstance(boxes_xyxy, torch.Tensor) and boxes_xyxy.dtype.kind != "f":
        boxes_xyxy = boxes_xyxy.astype(np.float64)
    out = (boxes_xyxy - _offset(boxes_xyxy, pad[0], pad[1])) / ratio
    if clip_to is not None:
        w, h = clip_to
        upper = _offset(out, w, h)
        if isinstance(out, torch.Tensor):
            out = torch.minimum(out.clamp(min=0), upper)
        else:
            out = np.minimum(np.maximum(out, 0), upper)
    return out
