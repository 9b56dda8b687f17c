"""Dataset audit: what is in each split and how much evaluation data leaks from training.

The paper's dataset section and its leakage caveat are computed from these files, so every table
has a fixed column order and is written even when empty. Leakage is measured at the video and the
patient level because frames of one clip are near-duplicates: a valid frame whose video is also in
train is not an independent test of generalisation. Exact duplicate files across splits (same
SHA-256 of the bytes) are the extreme case and are listed one pair per row.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from echomtl.atomic import write_text
from echomtl.data.records import (
    DEFECT_KINDS,
    MISSING_VIEW,
    SPLIT_NAMES,
    Defect,
    Record,
    rows_to_csv_text,
)

NO_BOX_CLASS = "none"  # counts.csv class for images without any box
STATS = ("mean", "median", "min", "max")
SIZE_MEASURES = ("width", "height", "area_frac", "rel_size")
TABLE_COLUMNS: dict[str, list[str]] = {
    "counts": ["split", "class", "view", "n_boxes", "n_images"],
    "box_sizes": ["split", "class", "count"] + [f"{m}_{s}" for m in SIZE_MEASURES for s in STATS],
    "image_sizes": ["split", "width", "height", "n"],
    "duplicates": ["hash", "split_a", "file_a", "split_b", "file_b"],
    "leakage": [
        "split",
        "n_videos",
        "n_videos_in_train",
        "n_patients",
        "n_patients_in_train",
        "n_images",
        "n_images_from_train_videos",
        "n_images_from_train_patients",
    ],
}


def audit(
    records: list[Record],
    defects: list[Defect],
    class_names: list[str],
    view_names: list[str],
) -> dict:
    """Compute every audit table and summary as one JSON-ready dict (tables are lists of rows)."""
    splits = present_splits(records)
    duplicates, n_within = duplicate_pairs(records)
    return {
        "class_names": list(class_names),
        "view_names": list(view_names),
        "splits": splits,
        "totals": totals(records, splits),
        "view_missing": {s: sum(r.view_index < 0 for r in records if r.split == s) for s in splits},
        "defects_by_kind": defect_counts(defects),
        "n_defects": len(defects),
        "duplicates_within_split": n_within,
        "counts": counts_table(records, splits, class_names, view_names),
        "box_sizes": box_size_table(records, splits, class_names),
        "image_sizes": image_size_table(records, splits),
        "duplicates": duplicates,
        "leakage": leakage_table(records, splits),
    }


def write_audit(audit_dict: dict, out_dir: Path) -> None:
    """Write audit.json and one CSV per table into ``out_dir`` (each file atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for table, columns in TABLE_COLUMNS.items():
        write_text(out_dir / f"{table}.csv", rows_to_csv_text(columns, audit_dict[table]))
    text = json.dumps(audit_dict, indent=2, allow_nan=False)
    write_text(out_dir / "audit.json", text + "\n")


def present_splits(records: list[Record]) -> list[str]:
    """Splits that hold records, in train, valid, test order (others after, by name)."""
    found = {r.split for r in records}
    return [s for s in SPLIT_NAMES if s in found] + sorted(found - set(SPLIT_NAMES))


def class_label(class_id: int, class_names: list[str]) -> str:
    """Class name for an id; an id outside the names is shown as its number, never dropped."""
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def totals(records: list[Record], splits: list[str]) -> dict[str, dict[str, int]]:
    """Images, boxes, patients and videos per split and over all splits ("all")."""
    groups = {s: [r for r in records if r.split == s] for s in splits}
    groups["all"] = list(records)
    return {
        name: {
            "n_images": len(recs),
            "n_boxes": sum(len(r.boxes) for r in recs),
            "n_patients": len({r.patient_id for r in recs}),
            "n_videos": len({r.video_id for r in recs}),
        }
        for name, recs in groups.items()
    }


def defect_counts(defects: list[Defect]) -> dict[str, int]:
    """Count per kind, every known kind listed (zeros included) so tables keep their shape."""
    counts = Counter(d.kind for d in defects)
    out = {k: counts.get(k, 0) for k in DEFECT_KINDS}
    out.update({k: n for k, n in sorted(counts.items()) if k not in out})
    return out


def counts_table(
    records: list[Record], splits: list[str], class_names: list[str], view_names: list[str]
) -> list[dict]:
    """Long table split x class x view (full grid, zeros included; view 'missing' included)."""
    n_boxes: Counter = Counter()
    n_images: Counter = Counter()
    extra_classes = set()
    for r in records:
        classes = [class_label(int(b[0]), class_names) for b in r.boxes]
        extra_classes.update(c for c in classes if c not in class_names)
        for c in classes:
            n_boxes[r.split, c, r.view] += 1
        for c in set(classes) or {NO_BOX_CLASS}:
            n_images[r.split, c, r.view] += 1
    class_list = list(class_names) + sorted(extra_classes) + [NO_BOX_CLASS]
    view_list = list(view_names) + [MISSING_VIEW]
    return [
        {
            "split": s,
            "class": c,
            "view": v,
            "n_boxes": n_boxes[s, c, v],
            "n_images": n_images[s, c, v],
        }
        for s in splits
        for c in class_list
        for v in view_list
    ]


def box_size_table(records: list[Record], splits: list[str], class_names: list[str]) -> list[dict]:
    """Per split and class: box width/height (px), area fraction of the image, sqrt of it."""
    sizes: dict[tuple[str, str], list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in records:
        for b in r.boxes:
            w, h = b[3] - b[1], b[4] - b[2]
            frac = w * h / (r.width * r.height)
            sizes[r.split, class_label(int(b[0]), class_names)].append(
                (w, h, frac, math.sqrt(max(frac, 0.0)))
            )
    extra = sorted({c for _, c in sizes} - set(class_names))
    rows = []
    for s in splits:
        for c in list(class_names) + extra:
            values = np.asarray(sizes.get((s, c), []), dtype=float).reshape(-1, 4)
            row: dict = {"split": s, "class": c, "count": len(values)}
            for j, measure in enumerate(SIZE_MEASURES):
                row.update(_stats(values[:, j], measure))
            rows.append(row)
    return rows


def _stats(values: np.ndarray, measure: str) -> dict[str, float | None]:
    if values.size == 0:  # None, not NaN: audit.json must stay strict JSON
        return {f"{measure}_{s}": None for s in STATS}
    funcs = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max}
    return {f"{measure}_{s}": float(funcs[s](values)) for s in STATS}


def image_size_table(records: list[Record], splits: list[str]) -> list[dict]:
    """How many images of each (width, height) per split: resolution mix drives letterboxing."""
    counts = Counter((r.split, r.width, r.height) for r in records)
    order = {s: i for i, s in enumerate(splits)}
    keys = sorted(counts, key=lambda k: (order[k[0]], k[1], k[2]))
    return [{"split": s, "width": w, "height": h, "n": counts[s, w, h]} for s, w, h in keys]


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes (exact duplicates only; re-encoded copies are not found)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def duplicate_pairs(records: list[Record]) -> tuple[list[dict], int]:
    """Pairs of byte-identical images in different splits, and the count of within-split pairs."""
    order = {s: i for i, s in enumerate(present_splits(records))}
    by_hash: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_hash[file_sha256(r.image_path)].append(r)
    rows, n_within = [], 0
    for digest in sorted(by_hash):
        group = sorted(by_hash[digest], key=lambda r: (order[r.split], r.name))
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                if a.split == b.split:
                    n_within += 1
                    continue
                rows.append(
                    {
                        "hash": digest,
                        "split_a": a.split,
                        "file_a": a.name,
                        "split_b": b.split,
                        "file_b": b.name,
                    }
                )
    return rows, n_within


def leakage_table(records: list[Record], splits: list[str]) -> list[dict]:
    """For each evaluation split: its videos/patients/images that also appear in train."""
    train = [r for r in records if r.split == "train"]
    train_videos = {r.video_id for r in train}
    train_patients = {r.patient_id for r in train}
    rows = []
    for s in splits:
        if s == "train":
            continue
        recs = [r for r in records if r.split == s]
        videos = {r.video_id for r in recs}
        patients = {r.patient_id for r in recs}
        rows.append(
            {
                "split": s,
                "n_videos": len(videos),
                "n_videos_in_train": len(videos & train_videos),
                "n_patients": len(patients),
                "n_patients_in_train": len(patients & train_patients),
                "n_images": len(recs),
                "n_images_from_train_videos": sum(r.video_id in train_videos for r in recs),
                "n_images_from_train_patients": sum(r.patient_id in train_patients for r in recs),
            }
        )
    return rows
