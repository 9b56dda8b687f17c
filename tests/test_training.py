"""Training: reproducible for a seed, and a killed run resumes to the same result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from echomtl.training import checkpoint as ckpt
from echomtl.training.trainer import (
    RunPaths,
    TrainingInterrupted,
    TrainParams,
    load_weights,
    train,
)

from .conftest import CLASS_NAMES, VIEW_NAMES

HYP = {
    "lr0": 0.01, "lrf": 0.01, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
    "warmup_momentum": 0.8, "warmup_bias_lr": 0.1, "box": 0.05, "obj": 1.0, "cls": 0.5,
    "anchor_t": 4.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "translate": 0.1, "scale": 0.5,
    "fliplr": 0.5,
}  # fmt: skip


def params(**overrides) -> TrainParams:
    base = TrainParams(
        experiment="t", seed=0, model="multitask", scale="n", class_names=CLASS_NAMES,
        view_names=VIEW_NAMES, imgsz=64, epochs=2, batch_size=4, nominal_batch=8,
        method="gradnorm", w_det=1.0, w_cls=0.01, alpha=1.5, augment=True, hyp=HYP,
        gradnorm={"lr": 0.025, "optimizer": "adam", "l0_window": 2}, diagnostics_every=3,
    )  # fmt: skip
    return replace(base, **overrides)


def paths(root: Path, cache: Path) -> RunPaths:
    return RunPaths(
        train_cache=cache, weights=root / "weights.pt", steps_csv=root / "steps.csv",
        epochs_csv=root / "epochs.csv", diagnostics_csv=root / "diagnostics.csv",
        checkpoint_dir=root / "checkpoints",
    )  # fmt: skip


def final_state(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "weights.pt", weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(a / "steps.csv"), pd.read_csv(b / "steps.csv"))


def test_same_seed_gives_identical_runs(tmp_path, tiny_caches):
    for name in ("a", "b"):
        train(params(), paths(tmp_path / name, tiny_caches["train"]))
    assert_same_run(tmp_path / "a", tmp_path / "b")
    steps = pd.read_csv(tmp_path / "a" / "steps.csv")
    assert len(steps) == 2 * 4  # 16 images, batch 4, 2 epochs
    assert abs(steps["weight_det"].iloc[-1] + steps["weight_cls"].iloc[-1] - 1.01) < 1e-6
    diagnostics = pd.read_csv(tmp_path / "a" / "diagnostics.csv")
    assert {"W", "feature", "trunk"} <= set(diagnostics["scope"])
    assert not (tmp_path / "a" / "checkpoints" / "last.pt").exists()


def test_other_seed_differs(tmp_path, tiny_caches):
    train(params(epochs=1), paths(tmp_path / "a", tiny_caches["train"]))
    train(params(epochs=1, seed=1), paths(tmp_path / "b", tiny_caches["train"]))
    sa, sb = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("stop_after", [2, 5])  # mid-epoch with pending accumulation; 2nd epoch
def test_interrupted_run_resumes_to_identical_result(tmp_path, tiny_caches, stop_after):
    train(params(), paths(tmp_path / "full", tiny_caches["train"]))
    resumed = paths(tmp_path / "resumed", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), resumed, stop_after_batches=stop_after)
    assert (resumed.checkpoint_dir / "last.pt").exists()
    assert not resumed.weights.exists()
    train(params(), resumed)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


@pytest.mark.parametrize("method", ["rlw", "imtl_g", "uncertainty"])
def test_new_methods_resume_to_identical_result(tmp_path, tiny_caches, method):
    """Random weighting's generator, the aggregators and the log-variances survive a resume."""
    p = params(method=method, augment=False)
    train(p, paths(tmp_path / "full", tiny_caches["train"]))
    resumed = paths(tmp_path / "resumed", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(p, resumed, stop_after_batches=3)
    train(p, resumed)
    assert_same_run(tmp_path / "full", tmp_path / "resumed")


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, tiny_caches, caplog):
    run = paths(tmp_path / "run", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), run, stop_after_batches=6)  # epoch 1 done (checkpoint) + 2 batches
    last = run.checkpoint_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with caplog.at_level("WARNING"):
        state = ckpt.load_checkpoint(run.checkpoint_dir, ckpt.fingerprint(_asdict(params())))
    assert "fails its SHA-256 check" in caplog.text
    assert state is not None and state["epoch"] == 1 and state["batch"] == 0
    train(params(), run)
    train(params(), paths(tmp_path / "full", tiny_caches["train"]))
    assert_same_run(tmp_path / "full", tmp_path / "run")


def test_checkpoint_of_other_config_is_ignored(tmp_path, tiny_caches):
    run = paths(tmp_path / "run", tiny_caches["train"])
    with pytest.raises(TrainingInterrupted):
        train(params(), run, stop_after_batches=2)
    other = params(alpha=2.0)
    assert ckpt.load_checkpoint(run.checkpoint_dir, ckpt.fingerprint(_asdict(other))) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": "det_only", "method": "fixed", "augment": False},
        {"model": "dual_backbone", "method": "fixed", "w_cls": 1.0},
        {"method": "fixed"},
        {"method": "uncertainty"},
        {"method": "pcgrad"},
    ],
)
def test_every_variant_trains_and_loads(tmp_path, tiny_caches, overrides):
    p = params(epochs=1, **overrides)
    train(p, paths(tmp_path, tiny_caches["train"]))
    model, saved = load_weights(tmp_path / "weights.pt")
    assert saved["model"] == p.model
    out = model(torch.zeros(1, 3, 64, 64))
    assert (out.view_logits is None) == (p.model == "det_only")


def _asdict(p: TrainParams) -> dict:
    from dataclasses import asdict

    return asdict(p)
