"""Shared by the benchmark scripts: a reproducible random training batch."""

from __future__ import annotations

import torch


def make_batch(bs: int, imgsz: int, n_views: int = 3, boxes_per_image: int = 2, seed: int = 0):
    """Random images with a few random boxes each (YOLO targets) and random view labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(bs, 3, imgsz, imgsz, generator=g)
    m = bs * boxes_per_image
    idx = torch.arange(bs).repeat_interleave(boxes_per_image).float()
    cls = torch.randint(0, 4, (m,), generator=g).float()
    wh = 0.05 + 0.3 * torch.rand(m, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(m, 2, generator=g)
    targets = torch.cat((idx[:, None], cls[:, None], xy, wh), 1)
    views = torch.randint(0, n_views, (bs,), generator=g)
    return images, targets, views
