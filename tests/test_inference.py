"""predict() with a fake model: letterbox mapping back to original pixels is exact."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from echomtl.evaluation.inference import evaluate_predictions, predict

CLASSES = ["AR", "MR"]
VIEWS = ["A4C", "PSAX", "PLAX"]


@dataclass
class FakeOutput:
    det: list
    view_logits: torch.Tensor | None
    shared_features: list = field(default_factory=list)
    task_features: dict = field(default_factory=dict)


class FakeModel(nn.Module):
    """Returns preset decoded predictions (one [B, N, 5 + nc] tensor per call)."""

    def __init__(self, decoded, logits):
        super().__init__()
        self.decoded, self.logits, self.calls = list(decoded), list(logits), []

    def forward(self, images):
        self.calls.append((self.training, torch.is_inference_mode_enabled(), images.shape[0]))
        dec = self.decoded.pop(0)
        return FakeOutput(det=[dec], view_logits=self.logits.pop(0))

    def decode(self, det):
        return det[0]


def make_cache():
    # image 0: 128 x 64 -> ratio 0.5, pad_y 16; image 1: 32 x 64 -> ratio 1, pad_x 16 (S = 64)
    return {
        "images": np.zeros((2, 64, 64, 3), np.uint8),
        "boxes": np.array(
            [[1, 0, 20, 8, 36, 40], [0, 1, 10, 21, 30, 41]], np.float32
        ),  # deliberately not sorted by image
        "views": np.array([2, -1]),
        "names": np.array(["p1_0.png", "p2_0.png"]),
        "orig_sizes": np.array([[128, 64], [32, 64]]),
        "letterbox": np.array([[0.5, 0.0, 16.0], [1.0, 16.0, 0.0]], np.float32),
    }


def decoded_batch():
    pad = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    img0 = [
        [20.0, 31.0, 20.0, 20.0, 1.0, 0.0, 0.75],  # letterboxed 10,21,30,41 -> 20,10,60,50
        [60.0, 31.0, 20.0, 20.0, 0.5, 1.0, 0.0],  # 50,21,70,41 -> 100,10,140,50, clipped at 128
    ]
    img1 = [[28.0, 24.0, 16.0, 32.0, 0.5, 0.5, 0.0], pad]  # 20,8,36,40 -> 4,8,20,40
    return torch.tensor([img0, img1])


@pytest.mark.parametrize("as_dict", [True, False])
def test_predict_maps_back_to_original_pixels(as_dict):
    cache = make_cache()
    images = torch.zeros(2, 3, 64, 64)
    batch = (images, torch.zeros(0, 6), torch.tensor([2, -1]), torch.tensor([0, 1]))
    if as_dict:
        batch = dict(zip(("images", "targets", "views", "indices"), batch, strict=True))
    model = FakeModel([decoded_batch()], [torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])])
    model.train()
    out = predict(model, [batch], cache, conf_thres=0.001, iou_thres=0.6, max_det=300)
    assert model.calls == [(False, True, 2)] and model.training  # eval + inference mode, restored

    a, b = out
    assert (a["name"], a["width"], a["height"]) == ("p1_0.png", 128, 64)
    assert a["gt"] == [[1, 20.0, 10.0, 60.0, 50.0]]
    assert (
        a["pred"] == [[0, 0.5, 100.0, 10.0, 128.0, 50.0], [1, 0.75, 20.0, 10.0, 60.0, 50.0]][::-1]
    )
    assert b["gt"] == [[0, 4.0, 8.0, 20.0, 40.0]]
    assert b["pred"] == [[0, 0.25, 4.0, 8.0, 20.0, 40.0]]
    assert (a["view_true"], a["view_pred"], b["view_true"], b["view_pred"]) == (2, 2, -1, 0)
    np.testing.assert_allclose(a["view_probs"], torch.softmax(torch.tensor([0.0, 0, 2]), 0))


def test_predict_without_view_head_and_evaluate():
    cache = make_cache()
    batches = [
        (torch.zeros(1, 3, 64, 64), torch.zeros(0, 6), torch.tensor([2]), torch.tensor([0])),
        (torch.zeros(1, 3, 64, 64), torch.zeros(0, 6), torch.tensor([-1]), torch.tensor([1])),
    ]
    dec = decoded_batch()
    model = FakeModel([dec[:1], dec[1:]], [None, None])
    out = predict(model, batches, cache)
    assert [o["name"] for o in out] == ["p1_0.png", "p2_0.png"]
    assert out[0]["view_pred"] is None and out[0]["view_probs"] is None
    metrics = evaluate_predictions(out, CLASSES, VIEWS)
    assert metrics["classification"] is None
    det = metrics["detection"]
    # class 1 (MR) perfectly found; class 0 (AR): one TP (.25), one FP with a higher score (.5)
    assert det["per_class"]["MR"] == {"ap50": 1.0, "ap50_95": 1.0, "n_gt": 1}
    assert det["per_class"]["AR"]["ap50"] == pytest.approx(0.5, abs=0.01)
    assert set(det) >= {"map50", "map50_95", "precision", "recall", "f1", "best_conf"}


def test_evaluate_predictions_classification_part():
    images = [
        {"gt": [], "pred": [], "view_true": 0, "view_pred": 0},
        {"gt": [], "pred": [], "view_true": -1, "view_pred": 1},
        {"gt": [], "pred": [], "view_true": 1, "view_pred": 0},
    ]
    cls = evaluate_predictions(images, CLASSES, VIEWS)["classification"]
    assert (cls["accuracy"], cls["n_evaluated"], cls["n_missing"]) == (0.5, 2, 1)
