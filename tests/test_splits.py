"""Split schemes: original keeps the export's splits; grouped never shares a patient."""

from __future__ import annotations

from collections import Counter

import pytest

from echomtl.data.records import Record
from echomtl.data.splits import apply_split


def make_records(n_patients: int = 40, splits: tuple[str, ...] = ("train", "valid")) -> list:
    """Patients of uneven size (1..12 frames), each with one main class, over given splits."""
    records = []
    for p in range(n_patients):
        n_frames = 1 + (p * 7) % 12
        for f in range(n_frames):
            cls = p % 4
            boxes = [] if (p + f) % 9 == 0 else [[cls, 1.0, 1.0, 5.0, 5.0]]
            records.append(
                Record(
                    image_path=f"/data/p{p:02d}-v{f % 2}.mp4-{f}.png",
                    split=splits[(p + f) % len(splits)],
                    patient_id=f"p{p:02d}",
                    video_id=f"p{p:02d}-v{f % 2}.mp4",
                    frame=f,
                    width=32,
                    height=24,
                    boxes=boxes,
                    view="A4C",
                    view_index=0,
                    label_path=f"/data/p{p:02d}-v{f % 2}.mp4-{f}.txt",
                )
            )
    return records


FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}


def patients_by_split(records: list[Record]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in records:
        out.setdefault(r.split, set()).add(r.patient_id)
    return out


def test_grouped_shares_no_patient_and_keeps_every_record():
    records = make_records()
    out = apply_split(records, "grouped", FRACTIONS, seed=0)
    assert sorted(r.image_path for r in out) == sorted(r.image_path for r in records)
    groups = patients_by_split(out)
    assert set(groups) == {"train", "valid", "test"}
    assert not groups["train"] & groups["valid"]
    assert not groups["train"] & groups["test"]
    assert not groups["valid"] & groups["test"]


def test_grouped_respects_fractions_approximately():
    records = make_records(n_patients=80)
    out = apply_split(records, "grouped", FRACTIONS, seed=3)
    sizes = Counter(r.split for r in out)
    for split, fraction in FRACTIONS.items():
        assert sizes[split] / len(out) == pytest.approx(fraction, abs=0.05)
    # class proportions follow the targets too
    for cls in range(4):
        n_cls = sum(1 for r in out for b in r.boxes if b[0] == cls)
        n_train = sum(1 for r in out if r.split == "train" for b in r.boxes if b[0] == cls)
        assert n_train / n_cls == pytest.approx(FRACTIONS["train"], abs=0.12)


def test_grouped_is_deterministic_for_a_seed_and_varies_with_it():
    records = make_records()

    def assignment(seed: int) -> dict[str, str]:
        return {r.patient_id: r.split for r in apply_split(records, "grouped", FRACTIONS, seed)}

    assert assignment(0) == assignment(0)
    assert assignment(0) != assignment(1)


def test_grouped_does_not_mutate_input():
    records = make_records()
    before = [(r.split, list(map(list, r.boxes))) for r in records]
    apply_split(records, "grouped", FRACTIONS, seed=0)
    assert [(r.split, list(map(list, r.boxes))) for r in records] == before


def test_grouped_zero_fraction_split_stays_empty():
    out = apply_split(make_records(), "grouped", {"train": 0.8, "valid": 0.2, "test": 0.0})
    assert {r.split for r in out} == {"train", "valid"}


def test_original_keeps_splits():
    records = make_records(splits=("train", "valid", "test"))
    out = apply_split(records, "original")
    assert sorted((r.image_path, r.split) for r in out) == sorted(
        (r.image_path, r.split) for r in records
    )


def test_original_without_test_is_kept_for_validation_only():
    records = make_records(splits=("train", "valid"))
    out = apply_split(records, "original")
    assert {r.split for r in out} == {"train", "valid"}
    assert len(out) == len(records)


@pytest.mark.parametrize("splits", [("train", "test"), ("valid", "test")])
def test_original_without_train_or_valid_suggests_grouped(splits):
    missing = ({"train", "valid"} - set(splits)).pop()
    with pytest.raises(ValueError, match=rf"no {missing} split.*grouped"):
        apply_split(make_records(splits=splits), "original")


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ({"train": 0.7, "valid": 0.2, "test": 0.2}, "sum to 1"),
        ({"train": 1.2, "valid": -0.1, "test": -0.1}, ">= 0"),
        ({"train": 0.8, "val": 0.2}, "unknown split"),
    ],
)
def test_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        apply_split(make_records(), "grouped", fractions)


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown split scheme"):
        apply_split(make_records(), "random")


def test_too_few_patients_for_the_splits():
    with pytest.raises(ValueError, match="patient"):
        apply_split(make_records(n_patients=2), "grouped", FRACTIONS)


def test_grouped_holdout_with_too_few_patients_names_the_config_keys():
    records = make_records(12)
    with pytest.raises(ValueError) as error:
        apply_split(records, "grouped", FRACTIONS, seed=0, min_patients=5)
    message = str(error.value)
    assert "config data.min_patients is 5" in message and "data.grouped_fractions" in message
    assert "too few patients (test 3, valid 4;" in message
    assert apply_split(records, "grouped", FRACTIONS, seed=0, min_patients=2)
