"""Class-aware NMS, thresholds and max_det of postprocess."""

import torch

from echomtl.evaluation.nms import postprocess


def row(cx, cy, w, h, obj, *cls):
    return [cx, cy, w, h, obj, *cls]


def test_class_aware_nms_single_label():
    decoded = torch.tensor(
        [
            [
                row(50, 50, 20, 20, 0.9, 0.9, 0.05),  # A: class 0, score .81
                row(52, 50, 20, 20, 0.8, 0.05, 0.9),  # B: class 1 on A: kept (other class)
                row(51, 51, 20, 20, 0.7, 0.9, 0.0),  # C: class 0 on A: suppressed
                row(150, 150, 20, 20, 0.5, 0.8, 0.1),  # D: class 0 far away: kept
            ]
        ]
    )
    (out,) = postprocess(decoded, multi_label=False)
    assert out.shape == (3, 6)
    torch.testing.assert_close(out[:, 5], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(out[:, 4], torch.tensor([0.81, 0.72, 0.40]))
    torch.testing.assert_close(out[0, :4], torch.tensor([40.0, 40.0, 60.0, 60.0]))  # xywh -> xyxy


def test_multi_label_is_default_for_several_classes():
    decoded = torch.tensor([[row(50, 50, 20, 20, 1.0, 0.9, 0.8)]])
    (multi,) = postprocess(decoded)
    (single,) = postprocess(decoded, multi_label=False)
    torch.testing.assert_close(multi[:, 4:], torch.tensor([[0.9, 0.0], [0.8, 1.0]]))
    torch.testing.assert_close(single[:, 4:], torch.tensor([[0.9, 0.0]]))


def test_conf_threshold_on_objectness_and_score():
    decoded = torch.tensor(
        [
            [
                row(50, 50, 20, 20, 0.0005, 1.0),  # objectness below conf_thres
                row(150, 50, 20, 20, 0.5, 0.001),  # score .0005 below conf_thres
                row(250, 50, 20, 20, 0.5, 0.5),  # kept
            ]
        ]
    )
    (out,) = postprocess(decoded, conf_thres=0.001)
    assert out.shape == (1, 6) and out[0, 0].item() == 240.0
    (none,) = postprocess(decoded, conf_thres=0.3)
    assert none.shape == (0, 6)


def test_max_det_keeps_highest_scores_per_image():
    scores = torch.linspace(0.1, 0.9, 10)
    rows = [row(30.0 * i + 10, 10, 10, 10, float(s), 1.0) for i, s in enumerate(scores)]
    second = rows[:2] + [row(10, 10, 10, 10, 0.0, 1.0)] * 8  # two boxes and padding
    out = postprocess(torch.tensor([rows, second]), max_det=3)
    torch.testing.assert_close(out[0][:, 4], scores.flip(0)[:3])
    assert out[1].shape == (2, 6)
