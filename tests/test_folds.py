"""Patient-grouped stratified cross-validation folds (split scheme cv)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from echomtl.data.folds import assign_folds, fold_split, stratum
from echomtl.data.records import Record

from .test_splits import make_records

VIEWS = ("A4C", "PSAX", "PLAX")


def cohort(n_patients: int = 45) -> list[Record]:
    """The split tests' patients (uneven sizes, one main class each, some background), each
    also given one of the three views."""
    records = make_records(n_patients)
    return [
        dataclasses.replace(r, view=VIEWS[int(r.patient_id[1:]) % 3],
                            view_index=int(r.patient_id[1:]) % 3)
        for r in records
    ]  # fmt: skip


def test_folds_are_patient_disjoint_and_cover_every_image_once():
    records = cohort()
    folds = assign_folds(records, 5, seed=0)
    assert set(folds) == {r.patient_id for r in records} and set(folds.values()) == set(range(5))
    test_images = Counter()
    for f in range(5):
        split = fold_split(records, f, 5, 0.2, seed=0)
        by = {s: {r.patient_id for r in split if r.split == s} for s in ("train", "valid", "test")}
        assert not (by["test"] & by["train"]) and not (by["test"] & by["valid"])
        assert not (by["valid"] & by["train"]) and all(by.values())
        assert by["test"] == {p for p, k in folds.items() if k == f}
        test_images.update(r.name for r in split if r.split == "test")
    assert set(test_images) == {r.name for r in records} and set(test_images.values()) == {1}


def test_folds_are_stratified_within_tolerance():
    records = cohort(60)
    folds = assign_folds(records, 5, seed=0)
    n = len(records)
    for f in range(5):
        part = [r for r in records if folds[r.patient_id] == f]
        assert abs(len(part) / n - 0.2) < 0.06  # images
        assert abs(sum(folds[p] == f for p in folds) / len(folds) - 0.2) < 0.06  # patients
        for view in VIEWS:  # views
            share = sum(r.view == view for r in part) / len(part)
            overall = sum(r.view == view for r in records) / n
            assert abs(share - overall) < 0.12, (f, view)
        background = sum(not r.boxes for r in part) / len(part)
        assert abs(background - sum(not r.boxes for r in records) / n) < 0.1
        for cls in range(4):  # boxes per class
            share = sum(b[0] == cls for r in part for b in r.boxes) / max(
                1, sum(len(r.boxes) for r in part)
            )
            overall = sum(b[0] == cls for r in records for b in r.boxes) / sum(
                len(r.boxes) for r in records
            )
            assert abs(share - overall) < 0.12, (f, cls)


def test_folds_are_deterministic_for_a_seed_and_vary_with_it():
    records = cohort()
    assert assign_folds(records, 3, 0) == assign_folds(list(reversed(records)), 3, 0)
    assert assign_folds(records, 3, 0) != assign_folds(records, 3, 1)
    boxed = next(r for r in records if r.boxes)
    empty = next(r for r in records if not r.boxes)
    assert stratum(boxed) == f"{boxed.view}|c{int(boxed.boxes[0][0])}"
    assert stratum(empty) == f"{empty.view}|background"


def test_fold_errors_name_the_config_keys():
    records = cohort(4)
    with pytest.raises(ValueError, match="4 patient.*5 folds.*data.cv_folds"):
        assign_folds(records, 5, 0)
    with pytest.raises(ValueError, match="data.cv_valid_fraction"):
        fold_split(records, 0, 2, 1.5, 0)
    with pytest.raises(ValueError, match="fold 3 is not in 0..1"):
        fold_split(records, 3, 2, 0.2, 0)
