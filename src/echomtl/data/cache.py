"""Model-input cache: the letterboxed images, boxes and view labels of one split in one ``.npz``.

Why: decoding ~1,000 PNGs and resizing them costs more than a whole epoch of a small model at
128 px, and every experiment x seed reads the same split. Build once, load in well under a second
(uncompressed ``np.savez``, no pickles: ``np.load(allow_pickle=False)`` is safe).

Contract (docs/architecture.md, ``cache/<scheme>/<split>-<imgsz>.npz``):

=============  =========  =============================================================
key            dtype      shape / meaning
=============  =========  =============================================================
images         uint8      ``[N, S, S, 3]`` RGB, letterboxed, pad value 114
boxes          float32    ``[M, 6]`` ``image_index, class_id, x1, y1, x2, y2`` (letterboxed px)
views          int64      ``[N]`` view index, -1 when missing
names          str        ``[N]`` image file names
orig_sizes     int64      ``[N, 2]`` ``width, height``
letterbox      float32    ``[N, 3]`` ``ratio, pad_x, pad_y`` (letterboxed = original*ratio+pad)
=============  =========  =============================================================

The file is written atomically (temporary file in the same folder, then ``os.replace``), so an
interrupted build never leaves a truncated cache that a later job would trust.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from echomtl.atomic import atomic_path
from echomtl.data.letterbox import boxes_to_letterbox, letterbox

if TYPE_CHECKING:  # records.py is written alongside; only attributes are used here
    from echomtl.data.records import Record

CACHE_KEYS: tuple[str, ...] = ("images", "boxes", "views", "names", "orig_sizes", "letterbox")
PAD_VALUE = 114


class CacheError(ValueError):
    """A cache file is missing keys or has inconsistent shapes/dtypes (message names the file)."""


def _field(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def build_cache(
    records: Sequence[Record] | Iterable[Any], split: str, imgsz: int, out_path: Path | str
) -> dict[str, Any]:
    """Letterbox every image of ``split`` in ``records`` (in order) and write the cache.

    ``records`` may hold all splits; only those whose ``split`` equals ``split`` are cached.
    Raises ``ValueError`` naming the image when an image's size disagrees with its record (a stale
    records table). Returns statistics: ``path, split, imgsz, n_images, n_boxes, n_missing_view,
    boxes_per_class {class_id: n}, images_per_view {view_index: n}, seconds, bytes``.
    """
    t0 = time.perf_counter()
    out_path = Path(out_path)
    rows = [r for r in records if _field(r, "split") == split]
    n = len(rows)
    images = np.empty((n, imgsz, imgsz, 3), dtype=np.uint8)
    views = np.empty(n, dtype=np.int64)
    orig_sizes = np.empty((n, 2), dtype=np.int64)
    lb = np.empty((n, 3), dtype=np.float32)
    names: list[str] = []
    box_rows: list[list[float]] = []
    for i, r in enumerate(rows):
        path = Path(_field(r, "image_path"))
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        rw, rh = int(_field(r, "width")), int(_field(r, "height"))
        if (w, h) != (rw, rh):
            raise ValueError(f"{path}: image is {w}x{h} but its record says {rw}x{rh}")
        images[i], ratio, pad = letterbox(rgb, imgsz, PAD_VALUE)
        views[i] = int(_field(r, "view_index"))
        orig_sizes[i] = (w, h)
        lb[i] = (ratio, pad[0], pad[1])
        names.append(path.name)
        for b in _field(r, "boxes"):
            xyxy = boxes_to_letterbox(np.asarray(b[1:5], dtype=np.float64), ratio, pad)
            box_rows.append([i, int(b[0]), *xyxy.tolist()])
    boxes = np.asarray(box_rows, dtype=np.float32).reshape(-1, 6)
    arrays = {
        "images": images,
        "boxes": boxes,
        "views": views,
        "names": np.asarray(names, dtype=str).reshape(n),
        "orig_sizes": orig_sizes,
        "letterbox": lb,
    }
    _atomic_savez(out_path, arrays)
    return {
        "path": str(out_path),
        "split": split,
        "imgsz": int(imgsz),
        "n_images": n,
        "n_boxes": int(boxes.shape[0]),
        "n_missing_view": int((views < 0).sum()),
        "boxes_per_class": {int(k): v for k, v in sorted(Counter(boxes[:, 1].astype(int)).items())},
        "images_per_view": {int(k): v for k, v in sorted(Counter(views.tolist()).items())},
        "seconds": time.perf_counter() - t0,
        "bytes": out_path.stat().st_size,
    }


def _atomic_savez(out_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write through a file object (so numpy never appends ``.npz``), atomically."""
    with atomic_path(out_path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def load_cache(path: Path | str) -> dict[str, np.ndarray]:
    """Load and validate a cache; raises :class:`CacheError` naming ``path`` on any mismatch."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CacheError(f"{path}: cannot read cache: {e}") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CacheError(f"{path}: not an .npz archive")
    with z:
        missing = [k for k in CACHE_KEYS if k not in z.files]
        if missing:
            raise CacheError(f"{path}: missing keys {missing} (has {sorted(z.files)})")
        try:
            data = {k: z[k] for k in CACHE_KEYS}
        except (OSError, ValueError, EOFError) as e:
            raise CacheError(f"{path}: cannot read cache: {e}") from e
    _validate(path, data)
    return data


def _validate(path: Path, d: dict[str, np.ndarray]) -> None:
    def fail(msg: str) -> None:
        raise CacheError(f"{path}: {msg}")

    im = d["images"]
    if im.dtype != np.uint8 or im.ndim != 4 or im.shape[3] != 3 or im.shape[1] != im.shape[2]:
        fail(f"images must be uint8 [N, S, S, 3], got {im.dtype} {im.shape}")
    n = im.shape[0]
    expect = {
        "views": (np.int64, (n,)),
        "orig_sizes": (np.int64, (n, 2)),
        "letterbox": (np.float32, (n, 3)),
    }
    for key, (dtype, shape) in expect.items():
        a = d[key]
        if a.dtype != dtype or a.shape != shape:
            fail(f"{key} must be {np.dtype(dtype)} {list(shape)}, got {a.dtype} {list(a.shape)}")
    if d["names"].shape != (n,) or d["names"].dtype.kind != "U":
        fail(f"names must be str [{n}], got {d['names'].dtype} {list(d['names'].shape)}")
    b = d["boxes"]
    if b.dtype != np.float32 or b.ndim != 2 or b.shape[1] != 6:
        fail(f"boxes must be float32 [M, 6], got {b.dtype} {list(b.shape)}")
    if b.shape[0] and (b[:, 0].min() < 0 or b[:, 0].max() >= n):
        fail(f"boxes image_index outside [0, {n})")
    if (d["views"] < -1).any():
        fail("views must be >= -1")
