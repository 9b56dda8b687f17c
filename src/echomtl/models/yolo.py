"""YOLOv5 v7.0 detector built from its layer table, scales n/s/m, with ``Detect`` and ``decode``.

The layer table is data (``LAYERS``) and the network is run by a small generic executor
(``LayerGraph.run``) that keeps the outputs later layers consume. The multi-task model uses the
same executor to split the graph at an attach layer: it runs layers ``0..attach`` once (the shared
trunk), then the rest of the detector from the saved outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from echomtl.models.blocks import C3, SPPF, Concat, Conv

# (from, repeats, module, args) before depth/width scaling; ``from`` -1 = previous layer.
LayerSpec = tuple[int | list[int], int, str, list]
LAYERS: list[LayerSpec] = [
    (-1, 1, "Conv", [64, 6, 2, 2]),  # 0 P1/2
    (-1, 1, "Conv", [128, 3, 2]),  # 1 P2/4
    (-1, 3, "C3", [128]),  # 2
    (-1, 1, "Conv", [256, 3, 2]),  # 3 P3/8
    (-1, 6, "C3", [256]),  # 4
    (-1, 1, "Conv", [512, 3, 2]),  # 5 P4/16
    (-1, 9, "C3", [512]),  # 6
    (-1, 1, "Conv", [1024, 3, 2]),  # 7 P5/32
    (-1, 3, "C3", [1024]),  # 8
    (-1, 1, "SPPF", [1024, 5]),  # 9 end of backbone
    (-1, 1, "Conv", [512, 1, 1]),  # 10
    (-1, 1, "Upsample", [None, 2, "nearest"]),  # 11
    ([-1, 6], 1, "Concat", [1]),  # 12
    (-1, 3, "C3", [512, False]),  # 13
    (-1, 1, "Conv", [256, 1, 1]),  # 14
    (-1, 1, "Upsample", [None, 2, "nearest"]),  # 15
    ([-1, 4], 1, "Concat", [1]),  # 16
    (-1, 3, "C3", [256, False]),  # 17 P3 out
    (-1, 1, "Conv", [256, 3, 2]),  # 18
    ([-1, 14], 1, "Concat", [1]),  # 19
    (-1, 3, "C3", [512, False]),  # 20 P4 out
    (-1, 1, "Conv", [512, 3, 2]),  # 21
    ([-1, 10], 1, "Concat", [1]),  # 22
    (-1, 3, "C3", [1024, False]),  # 23 P5 out
    ([17, 20, 23], 1, "Detect", ["nc", "anchors"]),  # 24
]
BACKBONE_END = 9  # last layer of the backbone (SPPF); attach points are 0..BACKBONE_END

# scale -> (depth_multiple, width_multiple)
SCALES: dict[str, tuple[float, float]] = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75)}

ANCHORS: tuple[tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23),  # P3/8
    (30, 61, 62, 45, 59, 119),  # P4/16
    (116, 90, 156, 198, 373, 326),  # P5/32
)
STRIDES: tuple[float, ...] = (8.0, 16.0, 32.0)


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` >= x (the reference's channel rounding)."""
    return math.ceil(x / divisor) * divisor


class Detect(nn.Module):
    """Per-level 1x1 conv (with bias) to ``na * (nc + 5)`` channels; raw training-form outputs.

    ``anchors`` ([nl, na, 2], pixels) and ``stride`` ([nl]) are buffers. ``forward`` always returns
    the raw list ``[B, na, ny, nx, 5 + nc]`` (before sigmoid); ``decode`` turns it into boxes.
    """

    def __init__(
        self,
        nc: int,
        ch: Sequence[int],
        anchors: Sequence[Sequence[float]] = ANCHORS,
        strides: Sequence[float] = STRIDES,
    ) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        if len(ch) != self.nl or len(strides) != self.nl:
            raise ValueError("Detect: need one input channel count and one stride per level")
        a = torch.tensor(anchors, dtype=torch.float32).view(self.nl, self.na, 2)
        self.register_buffer("anchors", a)  # pixels
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        self.strides = tuple(float(s) for s in strides)  # python copy: no tensor ops in hot paths
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self._grids: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.initialize_biases()

    def initialize_biases(self) -> None:
        """Reference prior: obj += log(8 / (640/s)^2), cls += log(0.6 / (nc - 0.99999))."""
        with torch.no_grad():
            for conv, s in zip(self.m, self.strides, strict=True):
                b = conv.bias.view(self.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5 : 5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        """Raw per-level predictions ``[B, na, ny, nx, no]``."""
        out = []
        for conv, x in zip(self.m, xs, strict=True):
            y = conv(x)
            bs, _, ny, nx = y.shape
            out.append(y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return out

    def _grid(self, i: int, ny: int, nx: int, ref: Tensor) -> tuple[Tensor, Tensor]:
        """(cell grid - 0.5, anchors in pixels) for level i; cached per shape/device/dtype."""
        key = (i, ny, nx, ref.device, ref.dtype)
        hit = self._grids.get(key)
        if hit is None:
            ys = torch.arange(ny, device=ref.device, dtype=ref.dtype)
            xs = torch.arange(nx, device=ref.device, dtype=ref.dtype)
            yv, xv = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2) - 0.5
            anchor = (
                self.anchors[i].to(device=ref.device, dtype=ref.dtype).view(1, self.na, 1, 1, 2)
            )
            hit = (grid, anchor)
            self._grids[key] = hit
        return hit

    def decode(self, det: list[Tensor]) -> Tensor:
        """Raw outputs -> ``[B, N, 5 + nc]``: xywh in input pixels, sigmoid obj and class scores.

        xy = (2 * sigmoid - 0.5 + grid) * stride, wh = (2 * sigmoid)^2 * anchor (pixels).
        """
        z = []
        for i, p in enumerate(det):
            bs, _, ny, nx, no = p.shape
            grid, anchor = self._grid(i, ny, nx, p)
            s = p.sigmoid()
            xy = (s[..., 0:2] * 2 + grid) * self.strides[i]
            wh = (s[..., 2:4] * 2) ** 2 * anchor
            z.append(torch.cat((xy, wh, s[..., 4:]), -1).view(bs, -1, no))
        return torch.cat(z, 1)


def _build(
    table: Sequence[LayerSpec], scale: str, nc: int, ch_in: int = 3
) -> tuple[list[nn.Module], list[int | list[int]], list[int]]:
    """Instantiate the layer table at a scale -> (modules, froms, output channels per layer)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    gd, gw = SCALES[scale]
    modules: list[nn.Module] = []
    froms: list[int | list[int]] = []
    chs: list[int] = []

    def ch_of(j: int, i: int) -> int:
        return ch_in if (i == 0 and j == -1) else chs[j]

    for i, (f, n, name, args) in enumerate(table):
        n = max(round(n * gd), 1) if n > 1 else n
        if name in ("Conv", "C3", "SPPF"):
            c1 = ch_of(f, i)
            c2 = make_divisible(args[0] * gw, 8)
            if name == "Conv":
                m: nn.Module = Conv(c1, c2, *args[1:])
            elif name == "C3":
                m = C3(c1, c2, n, *args[1:])
            else:
                m = SPPF(c1, c2, *args[1:])
        elif name == "Upsample":
            c2 = ch_of(f, i)
            m = nn.Upsample(size=args[0], scale_factor=args[1], mode=args[2])
        elif name == "Concat":
            assert isinstance(f, list)
            c2 = sum(ch_of(j, i) for j in f)
            m = Concat(args[0])
        elif name == "Detect":
            assert isinstance(f, list)
            m = Detect(nc, [chs[j] for j in f])
            c2 = 0
        else:  # pragma: no cover - table is fixed
            raise ValueError(f"unknown module {name!r}")
        modules.append(m)
        froms.append(f)
        chs.append(c2)
    return modules, froms, chs


class LayerGraph(nn.Module):
    """A list of layers run in order; ``from`` entries name earlier outputs (-1 = previous).

    ``run(x, start, stop, saved)`` executes layers ``start..stop-1``. ``saved`` maps a layer index
    to its output for the outputs later layers consume; it is read for inputs and updated in place,
    so a caller can pre-fill (or replace) entries, e.g. with an alias of a shared feature.
    """

    def __init__(self, table: Sequence[LayerSpec], scale: str, nc: int, ch_in: int = 3) -> None:
        super().__init__()
        modules, froms, chs = _build(table, scale, nc, ch_in)
        self.model = nn.ModuleList(modules)
        self.froms = froms
        self.channels = chs
        # absolute source indices per layer (-1 resolved to i - 1)
        self.sources: list[list[int]] = [
            [i - 1 if j == -1 else j for j in (f if isinstance(f, list) else [f])]
            for i, f in enumerate(froms)
        ]
        self.save = {j for f in froms for j in (f if isinstance(f, list) else [f]) if j != -1}
        # plan per layer: None -> previous output, int -> saved[j], list -> mixed (-1 = previous)
        self._plan: list[None | int | list[int]] = [None if f == -1 else f for f in froms]

    def __len__(self) -> int:
        return len(self.model)

    def run(self, x: Tensor, start: int, stop: int, saved: dict[int, Tensor]) -> Tensor:
        """Run layers ``start..stop-1`` from ``x`` (the output of layer ``start - 1``)."""
        save = self.save
        for i in range(start, stop):
            f = self._plan[i]
            if f is None:
                inp = x
            elif isinstance(f, int):
                inp = saved[f]
            else:
                inp = [x if j == -1 else saved[j] for j in f]
            x = self.model[i](inp)
            if i in save:
                saved[i] = x
        return x

    def consumed_by(self, start: int, upto: int) -> list[int]:
        """Sorted indices <= ``upto`` whose outputs are read by layers ``start..end``."""
        return sorted({j for i in range(start, len(self)) for j in self.sources[i] if j <= upto})


class YoloV5(LayerGraph):
    """The full v7.0 detector. ``forward`` returns the raw list of 3 level outputs."""

    def __init__(self, scale: str = "n", nc: int = 80, ch_in: int = 3) -> None:
        super().__init__(LAYERS, scale, nc, ch_in)
        self.scale = scale
        self.nc = nc

    @property
    def detect(self) -> Detect:
        """The Detect module (anchors, stride, nc, na, nl)."""
        return self.model[-1]

    def forward(self, x: Tensor) -> list[Tensor]:
        """Raw predictions, one ``[B, na, ny, nx, 5 + nc]`` per level."""
        return self.run(x, 0, len(self), {})

    def decode(self, det: list[Tensor]) -> Tensor:
        """See ``Detect.decode``."""
        return self.detect.decode(det)


def decode(detect: Detect, det: list[Tensor]) -> Tensor:
    """Functional form of ``Detect.decode``."""
    return detect.decode(det)


def backbone_table(attach: int) -> list[LayerSpec]:
    """Layers ``0..attach`` of the table (a valid standalone graph for attach <= 9)."""
    check_attach(attach)
    return list(LAYERS[: attach + 1])


def check_attach(attach: int) -> None:
    """Attach points are backbone layers 0..9."""
    if not isinstance(attach, int) or not 0 <= attach <= BACKBONE_END:
        raise ValueError(f"attach must be an int in 0..{BACKBONE_END}, got {attach!r}")
