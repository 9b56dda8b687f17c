"""Audit: counts, leakage (known overlap, asserted exactly), duplicates, written files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from echomtl.data.audit import TABLE_COLUMNS, audit, write_audit
from echomtl.data.records import Defect, Record

CLASSES = ["AR", "MR", "PR", "TR"]
VIEWS = ["A4C", "PSAX", "PLAX"]


def make_record(
    tmp_path: Path, split: str, stem: str, color: int, boxes: list, view_index: int = 0
) -> Record:
    """A record backed by a tiny PNG whose single colour fixes its SHA-256 (for duplicates)."""
    image = tmp_path / split / f"{stem}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (color, 0, 0)).save(image)
    patient, _, rest = stem.partition("-")
    video, _, frame = stem.rpartition("-")
    return Record(
        image_path=str(image),
        split=split,
        patient_id=patient,
        video_id=video,
        frame=int(frame),
        width=32,
        height=24,
        boxes=boxes,
        view=VIEWS[view_index] if view_index >= 0 else "missing",
        view_index=view_index,
        label_path=str(image.with_suffix(".txt")),
    )


@pytest.fixture
def fixture_records(tmp_path):
    """train: P1/v1 x2, P2/v1. valid: P1/v1 (shared video), P1/v2 (shared patient), P3/v1.

    test: P4/v1. valid P3 is byte-identical to train P2; train P1 frames 1 and 2 are identical.
    """
    box_ar = [0, 0.0, 0.0, 16.0, 12.0]  # quarter of the image
    box_tr = [3, 8.0, 6.0, 16.0, 12.0]
    return [
        make_record(tmp_path, "train", "P1-v1.mp4-1", 10, [box_ar], 0),
        make_record(tmp_path, "train", "P1-v1.mp4-2", 10, [box_ar, box_tr], 0),
        make_record(tmp_path, "train", "P2-v1.mp4-1", 20, [box_tr], 1),
        make_record(tmp_path, "valid", "P1-v1.mp4-3", 30, [box_ar], 0),
        make_record(tmp_path, "valid", "P1-v2.mp4-1", 40, [box_ar], -1),
        make_record(tmp_path, "valid", "P3-v1.mp4-1", 20, [], 2),
        make_record(tmp_path, "test", "P4-v1.mp4-1", 50, [box_tr], 1),
    ]


def test_leakage_counts_exact(fixture_records):
    result = audit(fixture_records, [], CLASSES, VIEWS)
    assert result["leakage"] == [
        {
            "split": "valid",
            "n_videos": 3,
            "n_videos_in_train": 1,
            "n_patients": 2,
            "n_patients_in_train": 1,
            "n_images": 3,
            "n_images_from_train_videos": 1,
            "n_images_from_train_patients": 2,
        },
        {
            "split": "test",
            "n_videos": 1,
            "n_videos_in_train": 0,
            "n_patients": 1,
            "n_patients_in_train": 0,
            "n_images": 1,
            "n_images_from_train_videos": 0,
            "n_images_from_train_patients": 0,
        },
    ]


def test_counts_table(fixture_records):
    rows = audit(fixture_records, [], CLASSES, VIEWS)["counts"]
    table = {(r["split"], r["class"], r["view"]): (r["n_boxes"], r["n_images"]) for r in rows}
    # full grid: 3 splits x (4 classes + none) x (3 views + missing)
    assert len(rows) == 3 * 5 * 4
    assert table["train", "AR", "A4C"] == (2, 2)
    assert table["train", "TR", "A4C"] == (1, 1)
    assert table["train", "TR", "PSAX"] == (1, 1)
    assert table["valid", "AR", "missing"] == (1, 1)
    assert table["valid", "none", "PLAX"] == (0, 1)
    assert table["test", "TR", "PSAX"] == (1, 1)
    assert table["test", "MR", "A4C"] == (0, 0)
    assert sum(n for n, _ in table.values()) == 7


def test_duplicates_across_splits(fixture_records):
    result = audit(fixture_records, [], CLASSES, VIEWS)
    assert [
        (d["split_a"], d["file_a"], d["split_b"], d["file_b"]) for d in result["duplicates"]
    ] == [("train", "P2-v1.mp4-1.png", "valid", "P3-v1.mp4-1.png")]
    assert len(result["duplicates"][0]["hash"]) == 64
    assert result["duplicates_within_split"] == 1


def test_totals_view_missing_defects_and_sizes(fixture_records):
    defects = [Defect("/x.txt", 0, "missing_onehot", "r"), Defect("/y.txt", 2, "bad_onehot", "r")]
    result = audit(fixture_records, defects, CLASSES, VIEWS)
    assert result["totals"]["all"] == {"n_images": 7, "n_boxes": 7, "n_patients": 4, "n_videos": 5}
    assert result["totals"]["train"]["n_boxes"] == 4
    assert result["view_missing"] == {"train": 0, "valid": 1, "test": 0}
    assert result["defects_by_kind"]["missing_onehot"] == 1
    assert result["defects_by_kind"]["bad_onehot"] == 1
    assert result["defects_by_kind"]["unreadable_image"] == 0
    assert result["image_sizes"] == [
        {"split": s, "width": 32, "height": 24, "n": n}
        for s, n in (("train", 3), ("valid", 3), ("test", 1))
    ]
    sizes = {(r["split"], r["class"]): r for r in result["box_sizes"]}
    ar = sizes["train", "AR"]
    assert ar["count"] == 2 and ar["width_mean"] == 16.0 and ar["area_frac_max"] == 0.25
    assert ar["rel_size_median"] == pytest.approx(0.5)
    assert sizes["train", "MR"]["count"] == 0 and sizes["train", "MR"]["width_mean"] is None


def test_write_audit_files(fixture_records, tmp_path):
    out = tmp_path / "audit"
    result = audit(fixture_records, [], CLASSES, VIEWS)
    write_audit(result, out)
    assert json.loads((out / "audit.json").read_text()) == json.loads(json.dumps(result))
    for table, columns in TABLE_COLUMNS.items():
        with (out / f"{table}.csv").open(newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
        assert reader.fieldnames == columns
        assert len(rows) == len(result[table])


def test_audit_of_empty_input_writes_headers(tmp_path):
    result = audit([], [], CLASSES, VIEWS)
    write_audit(result, tmp_path)
    assert (tmp_path / "leakage.csv").read_text().startswith("split,n_videos,")
    assert result["totals"]["all"]["n_images"] == 0
