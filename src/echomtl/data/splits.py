"""Split schemes: keep the export's splits, or re-split by patient so nothing leaks.

``original`` keeps what the export shipped (the paper's setting, but its frames of one video can
sit in train and valid); it needs train and valid, and a copy without a test split (like the
development copy of the real export) is evaluated on valid only. ``grouped`` pools every
record and assigns whole patients to train/valid/test, so no patient (hence no video) is in two
splits.

Grouped assignment (deterministic for a seed):

1. per patient, a count vector: boxes per class, plus images without any box (a "background"
   column) and the number of images;
2. each split's target is its fraction times the pooled total of each column;
3. patients are shuffled with ``seed``, then stably sorted largest first (so big patients are
   placed while there is still room, and ties are broken by the seed);
4. each patient goes to the split (with a positive fraction) whose deficit relative to target,
   weighted by the patient's own columns, is largest:
   ``score(s) = sum_c v_c * (target_sc - have_sc) / target_sc`` over columns with
   ``target_sc > 0``; ties go to the earlier split in train, valid, test order.

Classes stay as balanced as whole patients allow; with few large patients the fractions are only
approximate (every patient is indivisible). A grouped holdout must give every non-empty split at
least ``min_patients`` patients (config ``data.min_patients``): with fewer, selection and
evaluation rest on a handful of people and no patient-level statement can be made.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict

from echomtl.data.records import SPLIT_NAMES, Record

SCHEMES: tuple[str, ...] = ("original", "grouped", "cv")
#: partition name of outer fold ``f`` of the ``cv`` scheme (its own splits file and caches)
CV_PARTITION = "cv-fold{fold}"
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "valid": 0.15, "test": 0.15}


def apply_split(
    records: list[Record],
    scheme: str,
    fractions: dict[str, float] | None = None,
    seed: int = 0,
    min_patients: int = 1,
    cv_folds: int = 5,
    cv_valid_fraction: float = 0.2,
) -> list[Record]:
    """Return copies of ``records`` with ``split`` set by ``scheme``, sorted by (split, name).

    ``scheme`` is a partition: ``original``, ``grouped`` or ``cv-fold<f>`` (outer fold ``f`` of
    the ``cv`` scheme: test = fold ``f``, see :mod:`echomtl.data.folds`).
    """
    fold = cv_fold_of(scheme)
    if scheme == "original":
        out = _original(records)
    elif scheme == "grouped":
        out = _grouped(records, check_fractions(fractions or DEFAULT_FRACTIONS), seed)
        check_min_patients(out, min_patients)
    elif fold is not None:
        from echomtl.data.folds import fold_split

        out = fold_split(records, fold, cv_folds, cv_valid_fraction, seed)
        check_min_patients(
            out,
            min_patients,
            f"cross-validation fold {fold}",
            "data.cv_folds or data.cv_valid_fraction",
        )
    else:
        raise ValueError(
            f"unknown split scheme {scheme!r}; expected original, grouped or "
            f"{CV_PARTITION.format(fold='<f>')}"
        )
    return sort_records(out)


def cv_fold_of(partition: str) -> int | None:
    """The outer fold of a ``cv-fold<f>`` partition name, None for any other name."""
    prefix = CV_PARTITION.format(fold="")
    rest = partition.removeprefix(prefix)
    return int(rest) if rest != partition and rest.isdigit() else None


def check_min_patients(
    records: list[Record],
    min_patients: int,
    what: str = "grouped split",
    fix: str = "data.grouped_fractions",
) -> None:
    """Every split present must hold at least ``min_patients`` patients (names the config keys)."""
    patients: dict[str, set[str]] = defaultdict(set)
    for r in records:
        patients[r.split].add(r.patient_id)
    short = {s: len(p) for s, p in sorted(patients.items()) if len(p) < min_patients}
    if short:
        counts = ", ".join(f"{s} {n}" for s, n in short.items())
        raise ValueError(
            f"{what}: too few patients ({counts}; config data.min_patients is "
            f"{min_patients}) from {len({r.patient_id for r in records})} patients: change "
            f"{fix} or lower data.min_patients"
        )


def sort_records(records: list[Record]) -> list[Record]:
    """Deterministic order: train, valid, test (then any other split), then image file name."""
    order = {s: i for i, s in enumerate(SPLIT_NAMES)}
    return sorted(records, key=lambda r: (order.get(r.split, len(order)), r.split, r.name))


def check_fractions(fractions: dict[str, float]) -> dict[str, float]:
    """Fractions must name only train/valid/test, be >= 0 and sum to 1; missing splits get 0."""
    unknown = sorted(set(fractions) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"split fractions: unknown split(s) {unknown}; expected {SPLIT_NAMES}")
    out = {s: float(fractions.get(s, 0.0)) for s in SPLIT_NAMES}
    bad = {s: f for s, f in out.items() if not (math.isfinite(f) and f >= 0)}
    if bad:
        raise ValueError(f"split fractions must be finite and >= 0, got {bad}")
    total = sum(out.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {out} (sum {total:g})")
    return out


#: splits the ``original`` scheme cannot do without (training, and validation for model
#: selection); a missing test split is allowed: such a run is evaluated on validation only
REQUIRED_ORIGINAL_SPLITS: tuple[str, ...] = ("train", "valid")


def _original(records: list[Record]) -> list[Record]:
    present = {r.split for r in records}
    missing = [s for s in REQUIRED_ORIGINAL_SPLITS if s not in present]
    if missing:
        raise ValueError(
            f"split scheme 'original': the export has no {', '.join(missing)} split "
            f"(found: {sorted(present) or 'none'}); use the 'grouped' scheme to re-split "
            "by patient"
        )
    return [dataclasses.replace(r, boxes=[list(b) for b in r.boxes]) for r in records]


def _patient_vectors(records: list[Record]) -> dict[str, list[float]]:
    """Columns: boxes per class id (dense up to the largest id), background images, images."""
    n_classes = 1 + max((int(b[0]) for r in records for b in r.boxes), default=-1)
    vectors: dict[str, list[float]] = defaultdict(lambda: [0.0] * (n_classes + 2))
    for r in records:
        v = vectors[r.patient_id]
        for b in r.boxes:
            v[int(b[0])] += 1
        if not r.boxes:
            v[n_classes] += 1
        v[n_classes + 1] += 1
    return dict(vectors)


def assign_patients(
    vectors: dict[str, list[float]], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """Greedy largest-first assignment of patients to splits (see the module docstring)."""
    active = [s for s in SPLIT_NAMES if fractions[s] > 0]
    patients = sorted(vectors)
    if len(patients) < len(active):
        raise ValueError(
            f"grouped split: {len(patients)} patient(s) cannot fill {len(active)} non-empty "
            f"splits {active}; lower the number of splits with a positive fraction"
        )
    random.Random(seed).shuffle(patients)
    patients.sort(key=lambda p: -vectors[p][-1])  # stable: the shuffle breaks ties
    width = len(next(iter(vectors.values())))
    totals = [sum(v[c] for v in vectors.values()) for c in range(width)]
    target = {s: [fractions[s] * t for t in totals] for s in active}
    have = {s: [0.0] * width for s in active}
    assignment = {}
    for p in patients:
        v = vectors[p]

        def score(s: str, v: list[float] = v) -> float:
            return sum(
                v[c] * (target[s][c] - have[s][c]) / target[s][c]
                for c in range(width)
                if target[s][c] > 0
            )

        best = max(active, key=score)  # max keeps the first of equal scores
        assignment[p] = best
        have[best] = [h + x for h, x in zip(have[best], v, strict=True)]
    return assignment


def _grouped(records: list[Record], fractions: dict[str, float], seed: int) -> list[Record]:
    if not records:
        return []
    assignment = assign_patients(_patient_vectors(records), fractions, seed)
    return [
        dataclasses.replace(r, split=assignment[r.patient_id], boxes=[list(b) for b in r.boxes])
        for r in records
    ]
