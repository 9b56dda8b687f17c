"""Patient-grouped, stratified cross-validation folds (split scheme ``cv``).

With a few dozen patients a holdout leaves almost nobody to evaluate on; k-fold cross-validation
over whole patients evaluates every image exactly once, by the model that never saw its patient.

Assignment: scikit-learn's ``StratifiedGroupKFold`` (shuffled with the split seed) on the images,
grouped by ``patient_id``, stratified by a per-image label ``<view>|<class of the first box or
background>``: each fold then gets about the same share of every view, of every detection class
and of background images that whole patients allow.

For outer fold ``f``: test = the patients of fold ``f``; validation (model selection) = one inner
fold of a second ``StratifiedGroupKFold`` over the remaining patients, with about
``valid_fraction`` of them; train = the rest. So fold ``f``'s test patients are never in its
training or validation part, and its validation patients never in its training part.

The workflow runs it as split scheme ``cv`` (partitions ``cv-fold<f>``, see
:func:`echomtl.data.splits.apply_split`), configured by ``data.cv_folds`` and
``data.cv_valid_fraction``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np

from echomtl.data.records import Record

__all__ = ["assign_folds", "fold_split", "stratum"]


def stratum(record: Record) -> str:
    """The stratification label of one image: view and the class of its first box."""
    first = f"c{int(record.boxes[0][0])}" if record.boxes else "background"
    return f"{record.view}|{first}"


def _group_kfold(labels: Sequence[str], groups: Sequence[str], n_folds: int, seed: int) -> list:
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare strata: balanced as far as whole patients allow
        warnings.simplefilter("ignore", UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def assign_folds(records: Sequence[Record], n_folds: int, seed: int) -> dict[str, int]:
    """``patient_id -> fold`` (0..n_folds-1), every patient in exactly one fold."""
    patients = sorted({r.patient_id for r in records})
    if n_folds < 2:
        raise ValueError(f"config data.cv_folds must be >= 2, got {n_folds}")
    if len(patients) < n_folds:
        raise ValueError(
            f"cross-validation: {len(patients)} patient(s) cannot fill {n_folds} folds "
            "(config data.cv_folds)"
        )
    labels = [stratum(r) for r in records]
    groups = [r.patient_id for r in records]
    assignment: dict[str, int] = {}
    for fold, members in enumerate(_group_kfold(labels, groups, n_folds, seed)):
        for i in members:
            assignment[groups[i]] = fold
    return assignment


def fold_split(
    records: Sequence[Record], fold: int, n_folds: int, valid_fraction: float, seed: int
) -> list[Record]:
    """Copies of ``records`` with ``split`` = train/valid/test for outer fold ``fold``."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in 0..{n_folds - 1} (config data.cv_folds)")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"config data.cv_valid_fraction must be in (0, 1), got {valid_fraction}")
    folds = assign_folds(records, n_folds, seed)
    rest = [r for r in records if folds[r.patient_id] != fold]
    n_inner = max(2, round(1 / valid_fraction))
    rest_patients = {r.patient_id for r in rest}
    if len(rest_patients) < n_inner:
        raise ValueError(
            f"cross-validation fold {fold}: {len(rest_patients)} patient(s) outside the test "
            f"fold cannot give a validation part of {valid_fraction:g} (config "
            "data.cv_valid_fraction, data.cv_folds)"
        )
    inner = _group_kfold(
        [stratum(r) for r in rest], [r.patient_id for r in rest], n_inner, seed + 1 + fold
    )
    valid = {rest[i].patient_id for i in inner[0]}

    def split_of(r: Record) -> str:
        if folds[r.patient_id] == fold:
            return "test"
        return "valid" if r.patient_id in valid else "train"

    return [
        dataclasses.replace(r, split=split_of(r), boxes=[list(b) for b in r.boxes]) for r in records
    ]
