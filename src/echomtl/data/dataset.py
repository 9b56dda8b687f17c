"""Torch ``Dataset`` over a model-input cache, its ``collate`` and the optional augmentation.

Items are ``(image, boxes, view, index)``: ``image`` uint8 ``[3, S, S]``; ``boxes`` float32
``[n, 5]`` = ``class, cx, cy, w, h`` normalised by ``S``; ``view`` int (-1 missing); ``index`` the
row in the cache. :func:`collate` builds the batch contract of docs/architecture.md as a
:class:`Batch`, a named 4-tuple ``(images, targets, views, indices)`` (unpack it, or use
``batch.images`` / ``batch["images"]``).

Augmentation (``augment=True``) is the YOLOv5 v7.0 single-image set, in the reference's order:

1. random affine (``random_perspective`` with degrees = shear = perspective = 0): scale
   ``s ~ U(1 - scale, 1 + scale)`` about the image centre, translation
   ``U(-translate, translate) * S`` on each axis, bilinear, border fill 114. Boxes move with it
   (``torchvision.transforms.v2.functional.affine`` on ``tv_tensors.BoundingBoxes``, which
   clamps them to the canvas). As in YOLOv5's ``box_candidates``, a box is kept only if more than
   10 % of its scaled area stays visible, and ``SanitizeBoundingBoxes(min_size=2)`` at the end
   drops boxes under 2 px wide or high (YOLOv5's ``wh_thr``). Dropping a box that left the image
   is augmentation, not data loss.
2. HSV gains (``hsv_h, hsv_s, hsv_v`` = 0.015, 0.7, 0.4): YOLOv5's ``augment_hsv``, not
   ``ColorJitter``: gains ``r = 1 + U(-1, 1) * (h, s, v)``; hue is *multiplied* by ``r_h`` modulo
   the hue circle, saturation and value are multiplied and clipped, via lookup tables on 8-bit HSV
   (Pillow's HSV, whose hue circle is 0..255 where OpenCV's is 0..179: same fraction of a turn).
   Like the reference it applies to the grey border too.
3. horizontal flip with probability ``fliplr`` (0.5; ``v2.functional.horizontal_flip`` on image and
   boxes). Flipping an echo view mirrors the anatomy (e.g. the A4C left/right ventricles); the
   reference does it, so the default keeps it, and ``hyp["fliplr"] = 0`` turns it off.

Mosaic is off: it mixes four images and so four view labels. ``flipud``, ``degrees``, ``shear``
and ``perspective`` are 0 in the reference and are not implemented.

Reproducibility: the random numbers of item ``index`` in epoch ``e`` come from a
``torch.Generator`` seeded from ``(seed, e, index)`` (never from the global RNG), so an epoch's
augmented images are the same whatever the worker count or iteration order. Call
:meth:`CachedDataset.set_epoch` before each epoch (or build the loader with :func:`make_loader`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from echomtl.data.cache import load_cache

DEFAULT_HYP: dict[str, float] = {
    "hsv_h": 0.015,
    "hsv_s": 0.7,
    "hsv_v": 0.4,
    "translate": 0.1,
    "scale": 0.5,
    "fliplr": 0.5,
}
PAD_VALUE = 114
AREA_THR = 0.1  # YOLOv5 box_candidates: keep a box if > 10 % of its scaled area stays visible
MIN_SIZE = 2.0  # YOLOv5 box_candidates wh_thr (pixels)

Item = tuple[torch.Tensor, torch.Tensor, int, int]


def mix_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence; order matters)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def augment_hsv(image: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """YOLOv5 ``augment_hsv`` on an ``H x W x 3`` uint8 RGB array with gains ``(h, s, v)``."""
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    x = np.arange(256, dtype=np.float32)
    lut_h = np.mod(x * gains[0], 256).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    channels = [lut[hsv[..., k]] for k, lut in enumerate((lut_h, lut_s, lut_v))]
    merged = Image.merge("HSV", [Image.fromarray(c) for c in channels])
    return np.array(merged.convert("RGB"))  # writable, for torch.from_numpy


class CachedDataset(Dataset):
    """Dataset over a cache (a dict from :func:`load_cache` or a path to the ``.npz``)."""

    def __init__(
        self,
        cache: Mapping[str, np.ndarray] | Path | str,
        augment: bool = False,
        hyp: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        data = load_cache(cache) if isinstance(cache, (str, Path)) else cache
        self.images: np.ndarray = data["images"]
        self.views: np.ndarray = np.asarray(data["views"], dtype=np.int64)
        self.names: np.ndarray = data["names"]
        self.size = int(self.images.shape[1])
        boxes = np.asarray(data["boxes"], dtype=np.float32).reshape(-1, 6)
        order = np.argsort(boxes[:, 0], kind="stable")
        boxes = boxes[order]
        starts = np.searchsorted(boxes[:, 0], np.arange(len(self.images) + 1), side="left")
        self._boxes = [boxes[starts[i] : starts[i + 1], 1:6] for i in range(len(self.images))]
        self.augment = augment
        self.hyp = {**DEFAULT_HYP, **(dict(hyp) if hyp else {})}
        self.seed = int(seed)
        self.epoch = 0
        self._sanitize = v2.SanitizeBoundingBoxes(min_size=MIN_SIZE, min_area=1.0)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (reproducible per (seed, epoch, index))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        index = int(index)
        image = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        rows = self._boxes[index]
        cls = torch.from_numpy(rows[:, 0].copy())
        xyxy = torch.from_numpy(rows[:, 1:5].copy())
        if self.augment:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
            image, cls, xyxy = self._augment(image, cls, xyxy, gen)
        else:
            image = image.contiguous()
        s = float(self.size)
        cxcywh = torch.stack(
            [
                (xyxy[:, 0] + xyxy[:, 2]) / 2 / s,
                (xyxy[:, 1] + xyxy[:, 3]) / 2 / s,
                (xyxy[:, 2] - xyxy[:, 0]) / s,
                (xyxy[:, 3] - xyxy[:, 1]) / s,
            ],
            dim=1,
        ).reshape(-1, 4)
        boxes = torch.cat([cls.reshape(-1, 1).float(), cxcywh.float()], dim=1)
        return image, boxes, int(self.views[index]), index

    def _augment(
        self, image: torch.Tensor, cls: torch.Tensor, xyxy: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hyp, size = self.hyp, self.size
        # every draw happens, in a fixed order, whatever the hyp values: draws stay aligned
        u = torch.rand(8, generator=gen, dtype=torch.float64).tolist()
        scale = 1.0 + hyp["scale"] * (2 * u[0] - 1)
        tx = hyp["translate"] * (2 * u[1] - 1) * size
        ty = hyp["translate"] * (2 * u[2] - 1) * size
        gains = [
            1.0 + (2 * u[3 + k] - 1) * hyp[key] for k, key in enumerate(("hsv_h", "hsv_s", "hsv_v"))
        ]
        flip = u[6] < hyp["fliplr"]

        img = tv_tensors.Image(image)
        boxes = tv_tensors.BoundingBoxes(xyxy, format="XYXY", canvas_size=(size, size))
        if scale != 1.0 or tx != 0.0 or ty != 0.0:
            img = F.affine(
                img,
                angle=0.0,
                translate=[tx, ty],
                scale=scale,
                shear=[0.0, 0.0],
                interpolation=F.InterpolationMode.BILINEAR,
                fill=[float(PAD_VALUE)] * 3,
            )
            if len(xyxy):
                moved = F.affine(
                    boxes, angle=0.0, translate=[tx, ty], scale=scale, shear=[0.0, 0.0]
                )
                area0 = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) * scale**2
                area1 = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
                keep = area1 > AREA_THR * area0
                boxes = tv_tensors.wrap(moved[keep], like=moved)
                cls = cls[keep]
        if any(g != 1.0 for g in gains):
            hwc = img.permute(1, 2, 0).contiguous().numpy()
            img = tv_tensors.Image(torch.from_numpy(augment_hsv(hwc, gains)).permute(2, 0, 1))
        if flip:
            img, boxes = F.horizontal_flip(img), F.horizontal_flip(boxes)
        out = self._sanitize({"image": img, "boxes": boxes, "labels": cls})
        return (
            out["image"].as_subclass(torch.Tensor).contiguous(),
            out["labels"],
            out["boxes"].as_subclass(torch.Tensor).float(),
        )


class Batch(NamedTuple):
    """A collated batch: a 4-tuple ``(images, targets, views, indices)`` that also answers
    ``batch.images`` and ``batch["images"]``, so callers may unpack it or index it by name."""

    images: torch.Tensor
    targets: torch.Tensor
    views: torch.Tensor
    indices: torch.Tensor

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def collate(batch: Sequence[Item]) -> Batch:
    """Batch contract: ``images`` float32 ``[B,3,S,S]`` in [0, 1]; ``targets`` float32 ``[M,6]``
    (``image_index_in_batch, class, cx, cy, w, h``); ``views`` int64 ``[B]``; ``indices`` int64
    ``[B]``. Returned as a :class:`Batch` (a named 4-tuple)."""
    images = torch.stack([b[0] for b in batch])
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    targets = [
        torch.cat([torch.full((len(b[1]), 1), float(i)), b[1].float()], dim=1)
        for i, b in enumerate(batch)
    ]
    return Batch(
        images=images,
        targets=torch.cat(targets, dim=0) if targets else torch.zeros((0, 6)),
        views=torch.tensor([int(b[2]) for b in batch], dtype=torch.int64),
        indices=torch.tensor([int(b[3]) for b in batch], dtype=torch.int64),
    )


def make_loader(
    dataset: CachedDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader for one epoch: sets the dataset's epoch and seeds the shuffle from
    ``(seed, epoch)``, so the order and the augmentation of an epoch are reproducible.

    Build one per epoch (cheap). With ``num_workers > 0`` the workers get the dataset as it is when
    iteration starts, so the epoch set here reaches them.
    """
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate,
        **kwargs,
    )
