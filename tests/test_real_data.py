"""The real (development) Roboflow export: sizes, known quirks, leakage. Needs REGURG_DATA."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from echomtl.data.audit import audit
from echomtl.data.export_reader import read_export
from echomtl.data.splits import apply_split

pytestmark = pytest.mark.realdata

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]
KNOWN_MISSING_ONEHOT = {
    "aGdjwqtqa8Kb-unnamed_1_6.mp4-40.txt",
    "bmRlwqVuacKY-unnamed_1_3.mp4-28.txt",
}


@pytest.fixture(scope="module")
def real_export():
    root = os.environ.get("REGURG_DATA")
    if not root:
        pytest.skip("REGURG_DATA not set: path to the real Roboflow export (docs/dataset.md)")
    start = time.perf_counter()
    records, defects = read_export(Path(root), CLASSES, VIEWS)
    print(f"\nread_export on the real data: {time.perf_counter() - start:.2f} s")
    return records, defects


def test_split_sizes(real_export):
    records, _ = real_export
    assert sum(r.split == "train" for r in records) == 1042
    assert sum(r.split == "valid" for r in records) == 183
    assert all(len(r.boxes) == 1 for r in records)


def test_only_known_defects(real_export):
    records, defects = real_export
    assert sorted((Path(d.file).name, d.line, d.kind) for d in defects) == [
        (name, 0, "missing_onehot") for name in sorted(KNOWN_MISSING_ONEHOT)
    ]
    missing = {Path(r.label_path).name for r in records if r.view_index < 0}
    assert missing == KNOWN_MISSING_ONEHOT


def test_grouped_split_shares_no_patient(real_export):
    records, _ = real_export
    out = apply_split(records, "grouped", {"train": 0.7, "valid": 0.15, "test": 0.15}, seed=0)
    assert len(out) == len(records)
    patients = {s: {r.patient_id for r in out if r.split == s} for s in ("train", "valid", "test")}
    assert all(patients.values())
    assert not patients["train"] & patients["valid"]
    assert not patients["train"] & patients["test"]
    assert not patients["valid"] & patients["test"]


def test_audit_leakage_printed(real_export):
    records, defects = real_export
    result = audit(records, defects, CLASSES, VIEWS)
    (valid,) = [row for row in result["leakage"] if row["split"] == "valid"]
    print(f"\nleakage valid: {valid}")
    print(f"cross-split exact duplicates: {len(result['duplicates'])}")
    print(f"within-split exact duplicate pairs: {result['duplicates_within_split']}")
    assert valid["n_images"] == 183
    assert 0 <= valid["n_videos_in_train"] <= valid["n_videos"]
