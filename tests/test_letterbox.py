"""Letterbox: geometry on hand-checked cases, box transform and its inverse, padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echomtl.data.letterbox import (
    boxes_from_letterbox,
    boxes_to_letterbox,
    letterbox,
    letterbox_geometry,
)


def _img(w: int, h: int, value: int = 255) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_landscape_430x320_to_128():
    out, ratio, (px, py) = letterbox(_img(430, 320), 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert ratio == pytest.approx(128 / 430)
    # 320 * 128/430 = 95.26 -> 95 rows, (128 - 95) // 2 = 16 rows of padding on top, 17 below
    assert (px, py) == (0, 16)
    assert (out[:16] == 114).all() and (out[16 + 95 :] == 114).all()
    assert (out[16 : 16 + 95] == 255).all()
    box = np.array([[43.0, 32.0, 86.0, 64.0]])
    np.testing.assert_allclose(
        boxes_to_letterbox(box, ratio, (px, py)),
        [[12.8, 32 * 128 / 430 + 16, 25.6, 64 * 128 / 430 + 16]],
        rtol=0,
        atol=1e-9,
    )


def test_portrait_100x200_to_64():
    out, ratio, pad = letterbox(_img(100, 200), 64)
    assert ratio == pytest.approx(0.32) and pad == (16, 0)
    assert (
        (out[:, :16] == 114).all() and (out[:, 48:] == 114).all() and (out[:, 16:48] == 255).all()
    )
    np.testing.assert_allclose(
        boxes_to_letterbox(np.array([10.0, 20.0, 50.0, 100.0]), ratio, pad),
        [19.2, 6.4, 32.0, 32.0],
        atol=1e-9,
    )


def test_square_upscale_and_identity():
    out, ratio, pad = letterbox(_img(50, 50, 7), 100)
    assert ratio == 2.0 and pad == (0, 0) and (out == 7).all()
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    same, r, p = letterbox(img, 64)
    assert r == 1.0 and p == (0, 0) and np.array_equal(same, img)


def test_pad_value_is_configurable():
    out, _, _ = letterbox(_img(40, 20), 40, pad_value=0)
    assert (out[:10] == 0).all() and (out[10:30] == 255).all() and (out[30:] == 0).all()


def test_odd_padding_geometry():
    # 700 x 495 -> 160: ratio 160/700, height round(113.14) = 113, pad (160 - 113) // 2 = 23
    assert letterbox_geometry(700, 495, 160) == (160 / 700, 160, 113, 0, 23)
    assert letterbox_geometry(495, 700, 160)[1:] == (113, 160, 23, 0)


@pytest.mark.parametrize("size", [(430, 320), (320, 430), (800, 556)])
def test_content_lands_where_the_box_says(size):
    w, h = size
    img = _img(w, h, 0)
    x1, y1, x2, y2 = w // 4, h // 3, w // 2, (2 * h) // 3
    img[y1:y2, x1:x2] = 255
    out, ratio, pad = letterbox(img, 96)
    bx1, by1, bx2, by2 = boxes_to_letterbox(np.array([x1, y1, x2, y2], float), ratio, pad)
    ys, xs = np.nonzero(out[..., 0] > 128)
    # the bright region (thresholded at half) matches the mapped box to within one pixel
    assert abs(xs.min() - bx1) <= 1 and abs(xs.max() + 1 - bx2) <= 1
    assert abs(ys.min() - by1) <= 1 and abs(ys.max() + 1 - by2) <= 1


def test_inverse_round_trip_numpy_and_torch():
    rng = np.random.default_rng(1)
    boxes = rng.uniform(0, 400, (20, 4))
    ratio, pad = 0.2976, (0, 16)
    back = boxes_from_letterbox(boxes_to_letterbox(boxes, ratio, pad), ratio, pad)
    np.testing.assert_allclose(back, boxes, atol=1e-9)
    t = torch.as_tensor(boxes, dtype=torch.float64)
    tb = boxes_from_letterbox(boxes_to_letterbox(t, ratio, pad), ratio, pad)
    assert isinstance(tb, torch.Tensor)
    np.testing.assert_allclose(tb.numpy(), boxes, atol=1e-9)


def test_inverse_clips_to_image():
    lb = np.array([[-5.0, 10.0, 130.0, 120.0]])
    out = boxes_from_letterbox(lb, 128 / 430, (0, 16), clip_to=(430, 320))
    assert out[0, 0] == 0 and out[0, 2] == 430 and out[0, 3] == 320
    assert out[0, 1] == 0  # y = (10 - 16) / ratio < 0 -> 0


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8), 32)
    with pytest.raises(ValueError):
        boxes_to_letterbox(np.zeros((3, 5)), 1.0, (0, 0))
