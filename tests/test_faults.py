"""Faults: SIGKILL and SIGTERM mid-training, concurrent jobs. Each ends with identical results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from .test_training import assert_same_run, params, paths

CHILD = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from tests.test_training import params, paths
from echomtl.console import setup_logging
from echomtl.training.trainer import train
root = Path(sys.argv[1])
setup_logging(root / "train.log")
train(params(epochs=4), paths(root, Path(sys.argv[2])))
"""


def start_child(root: Path, cache: Path) -> subprocess.Popen:
    code = CHILD.format(tests=str(Path(__file__).resolve().parents[1]))
    return subprocess.Popen([sys.executable, "-c", code, str(root), str(cache)])


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "training ended before the expected checkpoint"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_caches) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    from echomtl.training.trainer import train

    train(params(epochs=4), paths(root, tiny_caches["train"]))
    return root


def test_sigkill_mid_epoch_then_rerun_resumes_identically(tmp_path, tiny_caches, uninterrupted):
    child = start_child(tmp_path, tiny_caches["train"])
    wait_for(tmp_path / "checkpoints" / "last.pt.sha256", child)  # first epoch checkpointed
    time.sleep(0.3)  # into the next epoch
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "weights.pt").exists()
    rerun = start_child(tmp_path, tiny_caches["train"])
    assert rerun.wait(timeout=300) == 0
    assert "resuming from" in (tmp_path / "train.log").read_text()
    assert_same_run(uninterrupted, tmp_path)


def test_sigterm_saves_a_checkpoint_and_exits(tmp_path, tiny_caches, uninterrupted):
    child = start_child(tmp_path, tiny_caches["train"])
    wait_for(tmp_path / "checkpoints" / "last.pt.sha256", child)
    child.send_signal(signal.SIGTERM)
    code = child.wait(timeout=60)
    log = (tmp_path / "train.log").read_text()
    if code == 0:  # training finished before the signal arrived: nothing to check
        pytest.skip("training ended before SIGTERM was delivered")
    assert "received signal 15" in log
    assert code == 1  # TrainingInterrupted: unfinished but resumable
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] * 100 + state["batch"] > 100  # beyond the end of epoch 1
    rerun = start_child(tmp_path, tiny_caches["train"])
    assert rerun.wait(timeout=300) == 0
    assert_same_run(uninterrupted, tmp_path)


def test_two_jobs_at_once_do_not_touch_each_other(tmp_path, tiny_caches, uninterrupted):
    roots = [tmp_path / "a", tmp_path / "b"]
    children = [start_child(root, tiny_caches["train"]) for root in roots]
    assert [c.wait(timeout=300) for c in children] == [0, 0]
    for root in roots:
        assert_same_run(uninterrupted, root)
        assert sorted(p.name for p in root.iterdir()) == sorted(
            ["checkpoints", "diagnostics.csv", "epochs.csv", "steps.csv", "train.log", "weights.pt"]
        )
    assert not any(p.name.startswith(".") for root in roots for p in root.rglob("*"))


def test_checkpoints_load_with_weights_only(tmp_path, tiny_caches):
    from echomtl.training.trainer import TrainingInterrupted, train

    with pytest.raises(TrainingInterrupted):
        train(params(), paths(tmp_path, tiny_caches["train"]), stop_after_batches=5)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "balancer", "ema", "grads", "torch_rng"} <= set(state)
    assert os.path.getsize(tmp_path / "checkpoints" / "last.pt") > 1000
