"""Pretrained starts: official YOLOv5 checkpoints read without running their pickle, transferred
into every network of every variant, refused with the file's name when they are not usable.

The real checkpoint is reached through ``YOLOV5N_WEIGHTS`` (``.ci/run`` sets it); the other tests
build checkpoints of their own with stub classes named like YOLOv5's.
"""

from __future__ import annotations

import builtins
import os
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from echomtl.atomic import sha256_file
from echomtl.config import ConfigError, weights_path
from echomtl.models.multitask import build_model
from echomtl.models.pretrained import (
    CheckpointError,
    load_pretrained,
    read_checkpoint,
    transfer,
)
from echomtl.models.yolo import YoloV5
from echomtl.study import resolve_inits
from echomtl.training.trainer import TrainingInterrupted, train

from .checkpoints import make_checkpoint
from .test_training import params, paths

DETECT_OUTPUTS = {f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def stub_n(tmp_path_factory) -> tuple[Path, YoloV5]:
    path = tmp_path_factory.mktemp("ckpt") / "stub-n.pt"
    return path, make_checkpoint(path)


def test_stub_checkpoint_loads_through_the_same_path(stub_n):
    path, source = stub_n
    checkpoint = read_checkpoint(path, "n")
    assert checkpoint.scale == "n" and checkpoint.nc == 80 and checkpoint.source == "model"
    assert "models.common" not in sys.modules  # nothing of the YOLOv5 tree was imported
    model = build_model("det_only", "n", 80, 3)
    result = transfer(model, checkpoint)
    # every tensor transfers at 80 classes, but the anchors (the project's own)
    assert set(checkpoint.tensors) - set(result.transferred["detector"]) == {"model.24.anchors"}
    for key, tensor in source.state_dict().items():
        if key.endswith("anchors"):
            continue
        got = model.state_dict()[f"detector.{key}"]
        assert got.dtype == tensor.dtype
        assert torch.equal(got, tensor.half().to(tensor.dtype)), key  # fp16 in the file


def test_four_class_model_keeps_its_detect_outputs_fresh(stub_n):
    path, _ = stub_n
    torch.manual_seed(1)
    model = build_model("multitask", "n", 4, 3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    result = load_pretrained(model, path, "n")
    assert set(result.skipped["detector"]) == DETECT_OUTPUTS | {"model.24.anchors"}
    state = model.state_dict()
    for key in [*(f"detector.{k}" for k in DETECT_OUTPUTS), "head.linear.weight"]:
        assert torch.equal(state[key], fresh[key]), key  # fresh init, bias priors for 4 classes
    assert torch.equal(state["detector.model.24.anchors"], fresh["detector.model.24.anchors"])


def test_official_checkpoint_transfers_342_of_349(official_n, caplog):
    caplog.set_level("INFO")
    model = build_model("det_only", "n", 4, 3)
    result = load_pretrained(model, official_n, "n")
    checkpoint = read_checkpoint(official_n, "n")
    assert len(checkpoint.tensors) == 349
    assert result.count() == 342
    assert set(result.skipped["detector"]) == DETECT_OUTPUTS | {"model.24.anchors"}
    moved = set(result.transferred["detector"])
    assert any(k.endswith("bn.running_var") for k in moved)  # statistics as well as weights
    assert any(k.endswith("conv.weight") for k in moved)
    for key in moved:
        assert torch.equal(model.state_dict()[f"detector.{key}"], checkpoint.tensors[key]), key
    assert "342/349" in caplog.text and "model.24.m.0.weight" in caplog.text
    assert checkpoint.sha256 in caplog.text


def test_dual_backbone_starts_both_backbones_from_the_checkpoint(stub_n):
    path, source = stub_n
    model = build_model("dual_backbone", "n", 4, 3, attach=9)
    result = load_pretrained(model, path, "n")
    assert result.count("backbone") == sum(
        1 for k in source.state_dict() if int(k.split(".")[1]) <= 9
    )
    state = model.state_dict()
    for key, tensor in source.state_dict().items():
        if int(key.split(".")[1]) <= 9:
            expected = tensor.half().to(tensor.dtype)
            assert torch.equal(state[f"backbone.{key}"], expected), key
            assert torch.equal(state[f"detector.{key}"], expected), key


class _Hostile:
    def __init__(self, call, argument: str) -> None:
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "marker"
    if how == "os.system":
        payload = _Hostile(os.system, f"touch {marker}")
    else:
        payload = _Hostile(builtins.eval, f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "hostile.pt"
    torch.save({"model": payload, "ema": None}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path, "n")
    assert str(path) in str(error.value) and "refused" in str(error.value)
    assert not marker.exists()


def test_truncated_file_is_refused_naming_it(tmp_path, stub_n):
    path, _ = stub_n
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        damaged = tmp_path / f"cut{cut}.pt"
        damaged.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(damaged)):
            read_checkpoint(damaged, "n")


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        read_checkpoint(text, "n")
    weights_only = tmp_path / "state.pt"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, weights_only)
    with pytest.raises(CheckpointError, match=r"state\.pt: not a YOLOv5 checkpoint"):
        read_checkpoint(weights_only, "n")


def test_wrong_scale_is_refused_naming_the_file_and_key(stub_n):
    path, _ = stub_n
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path, "s")
    message = str(error.value)
    assert str(path) in message and "yolov5n" in message and "model.scale is 's'" in message


@pytest.mark.parametrize(
    "model_class,task", [("SegmentationModel", "segmentation"), ("ClassificationModel", "classif")]
)
def test_checkpoints_of_other_tasks_are_refused(tmp_path, model_class, task):
    path = tmp_path / f"{model_class}.pt"
    make_checkpoint(path, model_class=model_class)
    with pytest.raises(CheckpointError, match=task) as error:
        read_checkpoint(path, "n")
    assert str(path) in str(error.value)


def test_pretrained_row_without_weights_is_refused_at_parse_time():
    table = pd.DataFrame(
        {"init": ["pretrained", None, "scratch"]}, index=["det_only", "fixed", "fixed_scratch"]
    )
    with pytest.raises(ValueError, match="det_only have init 'pretrained'.*model.weights"):
        resolve_inits(table, False, "config/experiments.tsv")
    inits = resolve_inits(table, True, "t.tsv")
    assert list(inits) == ["pretrained", "pretrained", "scratch"]
    assert list(resolve_inits(table.iloc[1:], False, "t.tsv")) == ["scratch", "scratch"]


def test_missing_weights_file_is_refused_at_parse_time(tmp_path, monkeypatch):
    monkeypatch.delenv("ECHOMTL_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match="model.weights.*is not a file"):
        weights_path({"model": {"weights": str(tmp_path / "absent.pt")}})
    with pytest.raises(ConfigError, match="environment variable"):
        weights_path({"model": {"weights": "${ECHOMTL_TEST_UNSET}"}})
    assert weights_path({"model": {"weights": None}}) is None


def test_run_records_the_checkpoint_and_refuses_another_file_on_resume(
    tmp_path, tiny_caches, caplog
):
    file_a, file_b = tmp_path / "a.pt", tmp_path / "b.pt"
    make_checkpoint(file_a, seed=0)
    make_checkpoint(file_b, seed=1)
    run = params(model="det_only", method="fixed", w_cls=0.0, alpha=None, augment=False)
    run_a = replace(run, init="pretrained", weights_sha256=sha256_file(file_a))
    run_b = replace(run, init="pretrained", weights_sha256=sha256_file(file_b))
    first = replace(paths(tmp_path / "run", tiny_caches["train"]), pretrained=file_a)
    with pytest.raises(TrainingInterrupted):
        train(run_a, first, stop_after_batches=2)
    # the same run directory, another checkpoint file: the saved state is not resumed
    caplog.set_level("INFO")
    train(run_b, replace(first, pretrained=file_b))
    assert "belongs to another configuration" in caplog.text and "resumed" not in caplog.text
    fresh = replace(paths(tmp_path / "fresh", tiny_caches["train"]), pretrained=file_b)
    train(run_b, fresh)
    a = torch.load(tmp_path / "run" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "fresh" / "weights.pt", weights_only=True)
    assert a["params"]["weights_sha256"] == sha256_file(file_b)  # in the run's metadata
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # a file that changed after the workflow read it stops the run
    with pytest.raises(CheckpointError, match="SHA-256"):
        train(run_a, replace(paths(tmp_path / "c", tiny_caches["train"]), pretrained=file_b))
