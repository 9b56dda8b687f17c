"""Cache build/load, the cached Dataset, collate contract and box-aware augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomtl.data.cache import CACHE_KEYS, CacheError, build_cache, load_cache
from echomtl.data.dataset import CachedDataset, collate, make_loader
from echomtl.data.letterbox import boxes_from_letterbox

S = 64
NO_HSV = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}


def _cache(boxes_per_image: list[list[list[float]]], views: list[int]) -> dict[str, np.ndarray]:
    """Grey images with a white rectangle under each box (class, x1, y1, x2, y2 in pixels)."""
    n = len(boxes_per_image)
    images = np.full((n, S, S, 3), 100, dtype=np.uint8)
    rows = []
    for i, boxes in enumerate(boxes_per_image):
        for c, x1, y1, x2, y2 in boxes:
            images[i, int(y1) : int(y2), int(x1) : int(x2)] = 255
            rows.append([i, c, x1, y1, x2, y2])
    return {
        "images": images,
        "boxes": np.asarray(rows, np.float32).reshape(-1, 6),
        "views": np.asarray(views, np.int64),
        "names": np.asarray([f"im{i}.png" for i in range(n)]),
        "orig_sizes": np.full((n, 2), S, np.int64),
        "letterbox": np.tile(np.array([1.0, 0.0, 0.0], np.float32), (n, 1)),
    }


@pytest.fixture()
def cache() -> dict[str, np.ndarray]:
    return _cache(
        [[[1, 10, 20, 30, 44]], [], [[0, 40, 8, 60, 24], [3, 4, 40, 20, 60]]],
        views=[0, -1, 2],
    )


# ------------------------------------------------------------------------------- collate contract
def test_collate_contract(cache):
    ds = CachedDataset(cache)
    batch = collate([ds[i] for i in range(3)])
    images, targets, views, indices = batch  # a named 4-tuple ...
    assert batch["images"] is images and batch.targets is targets  # ... also indexable by name
    assert images.dtype == torch.float32 and images.shape == (3, 3, S, S)
    assert torch.allclose(images[0, 0, 0, 0], torch.tensor(100 / 255))
    assert images.max() == 1.0 and images.min() >= 0.0
    assert targets.dtype == torch.float32 and targets.shape == (3, 6)
    expected = torch.tensor(
        [
            [0, 1, 20 / S, 32 / S, 20 / S, 24 / S],
            [2, 0, 50 / S, 16 / S, 20 / S, 16 / S],
            [2, 3, 12 / S, 50 / S, 16 / S, 20 / S],
        ]
    )
    assert torch.allclose(targets, expected, atol=1e-6)
    assert views.dtype == torch.int64 and views.tolist() == [0, -1, 2]
    assert indices.dtype == torch.int64 and indices.tolist() == [0, 1, 2]
    image, boxes, view, index = ds[2]
    assert image.dtype == torch.uint8 and image.shape == (3, S, S)
    assert boxes.shape == (2, 5) and view == 2 and index == 2


def test_collate_of_images_without_boxes(cache):
    ds = CachedDataset(cache)
    images, targets, views, _ = collate([ds[1], ds[1]])
    assert images.shape == (2, 3, S, S) and targets.shape == (0, 6) and views.tolist() == [-1, -1]


# ------------------------------------------------------------------------------- augmentation
def _white_extent(image: torch.Tensor) -> tuple[int, int, int, int] | None:
    ys, xs = torch.nonzero((image.min(dim=0).values > 200), as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_augmented_box_still_encloses_the_white_rectangle():
    cache = _cache([[[2, 16, 12, 40, 36]]], views=[1])
    ds = CachedDataset(cache, augment=True, hyp=NO_HSV, seed=0)
    flips = kept = 0
    for epoch in range(40):
        ds.set_epoch(epoch)
        image, boxes, view, _ = ds[0]
        assert image.dtype == torch.uint8 and image.shape == (3, S, S) and view == 1
        extent = _white_extent(image)
        if len(boxes) == 0:  # dropped only when (nearly) all of it left the image
            visible = 0 if extent is None else (extent[2] - extent[0]) * (extent[3] - extent[1])
            assert visible < 0.1 * 576 * 2.25 + 2 * 36  # 10 % of the scaled area (+ blur)
            continue
        kept += 1
        c, cx, cy, w, h = boxes[0].tolist()
        assert c == 2
        x1, y1, x2, y2 = (cx - w / 2) * S, (cy - h / 2) * S, (cx + w / 2) * S, (cy + h / 2) * S
        assert extent is not None
        ex1, ey1, ex2, ey2 = extent
        # the box encloses every white pixel and is tight to them (bilinear edges: 1.5 px)
        assert x1 - 1.5 <= ex1 and ex2 <= x2 + 1.5 and y1 - 1.5 <= ey1 and ey2 <= y2 + 1.5
        assert abs(ex1 - x1) <= 1.5 and abs(ex2 - x2) <= 1.5
        assert abs(ey1 - y1) <= 1.5 and abs(ey2 - y2) <= 1.5
        flips += int(cx > 0.5)
    assert kept >= 30 and 5 <= flips <= kept - 5  # flips happen, both ways


def test_border_fill_is_114_and_hsv_changes_colours():
    cache = _cache([[[1, 16, 16, 48, 48]]], views=[0])
    ds = CachedDataset(cache, augment=True, hyp={**NO_HSV, "scale": 0.0, "translate": 0.25})
    values = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        image = ds[0][0]
        values |= set(image[:, 0, 0].tolist()) | set(image[:, -1, -1].tolist())
    assert 114 in values
    ds_hsv = CachedDataset(cache, augment=True, hyp={"scale": 0.0, "translate": 0.0, "fliplr": 0})
    grey = set()
    for epoch in range(5):
        ds_hsv.set_epoch(epoch)
        grey.add(int(ds_hsv[0][0][0, 0, 0]))
    assert len(grey) > 1  # the value gain moves the grey level


def test_flip_only_mirrors_image_and_boxes(cache):
    hyp = {**NO_HSV, "scale": 0.0, "translate": 0.0, "fliplr": 1.0}
    plain, flipped = CachedDataset(cache), CachedDataset(cache, augment=True, hyp=hyp)
    for i in range(3):
        a, b = plain[i], flipped[i]
        assert torch.equal(b[0], torch.flip(a[0], dims=[2]))
        expect = a[1].clone()
        expect[:, 1] = 1 - expect[:, 1]
        assert torch.allclose(b[1], expect, atol=1e-6)


def test_no_flip_when_fliplr_is_zero(cache):
    hyp = {**NO_HSV, "scale": 0.0, "translate": 0.0, "fliplr": 0.0}
    ds = CachedDataset(cache, augment=True, hyp=hyp)
    for epoch in range(5):
        ds.set_epoch(epoch)
        assert torch.equal(ds[0][0], CachedDataset(cache)[0][0])


def test_augmentation_is_reproducible_per_seed_epoch_index(cache):
    a = CachedDataset(cache, augment=True, seed=7)
    b = CachedDataset(cache, augment=True, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    torch.manual_seed(123)  # the global RNG is not used
    items_a = [a[i] for i in (0, 1, 2)]
    torch.manual_seed(999)
    items_b = [b[i] for i in (2, 1, 0)][::-1]  # order of access does not matter
    for x, y in zip(items_a, items_b, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    b.set_epoch(4)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(3))
    c = CachedDataset(cache, augment=True, seed=8)
    c.set_epoch(3)
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(3))


def test_make_loader_is_seeded(cache):
    ds = CachedDataset(cache, augment=True, seed=1)

    def order(epoch: int) -> list[int]:
        loader = make_loader(ds, batch_size=2, shuffle=True, seed=1, epoch=epoch)
        return [i for batch in loader for i in batch.indices.tolist()]

    assert order(0) == order(0)
    assert sorted(order(0)) == [0, 1, 2]
    assert any(order(0) != order(e) for e in range(1, 6))
    loader = make_loader(ds, batch_size=3, shuffle=False, seed=1, epoch=2)
    assert ds.epoch == 2
    batch = next(iter(loader))
    assert batch.images.shape == (3, 3, S, S) and batch.views.dtype == torch.int64


# ------------------------------------------------------------------------------- cache files
def test_build_and_load_cache_round_trip(tiny_export, tmp_path):
    from echomtl.data.export_reader import read_export

    records, _ = read_export(tiny_export, ["AR", "MR", "PR", "TR"], ["A4C", "PSAX", "PLAX"])
    out = tmp_path / "cache" / "valid-64"  # no .npz suffix: the file must still be exactly this
    stats = build_cache(records, "valid", 64, out)
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["valid-64"]
    data = load_cache(out)
    valid = [r for r in records if r.split == "valid"]
    n = len(valid)
    assert set(data) == set(CACHE_KEYS) and stats["n_images"] == n
    assert data["images"].shape == (n, 64, 64, 3) and data["images"].dtype == np.uint8
    assert data["views"].tolist() == [r.view_index for r in valid]
    assert data["names"].tolist() == [r.name for r in valid]
    assert data["orig_sizes"].tolist() == [[r.width, r.height] for r in valid]
    assert data["boxes"].shape == (sum(len(r.boxes) for r in valid), 6)
    for row in data["boxes"]:
        i = int(row[0])
        ratio, px, py = data["letterbox"][i].tolist()
        back = boxes_from_letterbox(row[2:6].astype(np.float64), ratio, (px, py))
        np.testing.assert_allclose(back, valid[i].boxes[0][1:], atol=0.01)
        assert int(row[1]) == valid[i].boxes[0][0]
    # pad rows of a 430 x 320 frame at 64 px: ratio 64/430, 48 rows, 8 rows of 114 on top
    assert data["letterbox"][0].tolist() == pytest.approx([64 / 430, 0, 8])
    assert (data["images"][:, :8] == 114).all()
    ds = CachedDataset(out)
    assert len(ds) == n


def test_load_cache_errors_name_the_file(tmp_path, cache):
    bad = dict(cache)
    del bad["letterbox"]
    path = tmp_path / "bad.npz"
    np.savez(path, **bad)
    with pytest.raises(CacheError, match=r"bad\.npz: missing keys \['letterbox'\]"):
        load_cache(path)
    wrong = dict(cache, views=cache["views"].astype(np.int32))
    np.savez(path, **wrong)
    with pytest.raises(CacheError, match=r"bad\.npz: views must be int64"):
        load_cache(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CacheError, match="junk.npz"):
        load_cache(tmp_path / "junk.npz")


def test_build_cache_rejects_stale_record_sizes(tiny_export, tmp_path):
    from echomtl.data.export_reader import read_export

    records, _ = read_export(tiny_export, ["AR", "MR", "PR", "TR"], ["A4C", "PSAX", "PLAX"])
    records[0].width += 1
    with pytest.raises(ValueError, match=records[0].name):
        build_cache(records, records[0].split, 32, tmp_path / "x.npz")
    assert not any(tmp_path.iterdir())  # nothing half-written
