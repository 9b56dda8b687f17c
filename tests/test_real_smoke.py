"""Smoke test on the real shared data: one epoch on a handful of real images, then evaluation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from echomtl.data.cache import build_cache, load_cache
from echomtl.data.dataset import CachedDataset, make_loader
from echomtl.data.export_reader import read_export
from echomtl.evaluation.inference import evaluate_predictions, predict
from echomtl.training.trainer import load_weights, train

from .conftest import CLASS_NAMES, VIEW_NAMES
from .test_training import params, paths


@pytest.mark.realdata
def test_one_epoch_on_real_images(real_data, tmp_path):
    records, _ = read_export(real_data, CLASS_NAMES, VIEW_NAMES, splits=("train", "valid"))
    subset = [r for r in records if r.split == "train"][:12] + [
        r for r in records if r.split == "valid"
    ][:6]
    build_cache(subset, "train", 64, tmp_path / "train.npz")
    build_cache(subset, "valid", 64, tmp_path / "valid.npz")
    p = replace(params(), epochs=1, augment=True)
    train(p, paths(tmp_path / "run", tmp_path / "train.npz"))
    model, _ = load_weights(tmp_path / "run" / "weights.pt")
    cache = load_cache(tmp_path / "valid.npz")
    images = predict(model, make_loader(CachedDataset(cache), 8), cache)
    assert [img["name"] for img in images] == [r.name for r in subset[12:]]
    assert all(img["width"] in (430, 700, 800) for img in images)
    metrics = evaluate_predictions(images, CLASS_NAMES, VIEW_NAMES)
    assert 0.0 <= metrics["detection"]["map50"] <= 1.0  # real GT boxes: defined, never NaN
    assert metrics["classification"]["n_evaluated"] == 6
