"""Shared fixtures: a tiny synthetic export and its caches, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

CLASS_NAMES = ["AR", "MR", "PR", "TR"]
VIEW_NAMES = ["A4C", "PSAX", "PLAX"]
ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    from echomtl.data.synthetic import generate_synthetic_export

    out = tmp_path_factory.mktemp("tiny_export") / "export"
    generate_synthetic_export(
        out, sizes={"train": 16, "valid": 8, "test": 8}, seed=3, class_names=CLASS_NAMES,
        view_names=VIEW_NAMES,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_caches(tiny_export, tmp_path_factory) -> dict[str, Path]:
    from echomtl.data.cache import build_cache
    from echomtl.data.export_reader import read_export

    records, defects = read_export(tiny_export, CLASS_NAMES, VIEW_NAMES)
    assert not defects
    out = tmp_path_factory.mktemp("tiny_cache")
    paths = {}
    for split in ("train", "valid", "test"):
        paths[split] = out / f"{split}-64.npz"
        build_cache(records, split, 64, paths[split])
    return paths


def shared_file(variable: str, what: str) -> Path:
    """A file the tests reach through an environment variable (.ci/run sets it), else skip."""
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"{variable} not set: path to {what}")
    return Path(path)


@pytest.fixture(scope="session")
def real_data() -> Path:
    return shared_file("REGURG_DATA", "the real Roboflow export (docs/dataset.md)")


@pytest.fixture(scope="session")
def official_n() -> Path:
    return shared_file("YOLOV5N_WEIGHTS", "the official yolov5n.pt (docs/pretrained.md)")
