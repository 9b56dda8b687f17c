"""Pooled out-of-fold evaluation of a cross-validated experiment.

Each outer fold's model predicts its fold's test images (patients it never saw); the union of
the folds' test predictions covers every image exactly once and is evaluated as one set: COCO
mAP and P/R/F1 at one confidence threshold over all images, view metrics over all images. The
boxes' confidences come from k different models, so pooled AP also pays for their calibration
differing (the usual price of pooled cross-validated detection metrics); per-fold values are
kept beside the pooled ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["FOLD_METRICS", "pool_fold_predictions", "fold_summary"]

#: metrics kept per fold in a pooled metrics file (the report's per-fold spread)
FOLD_METRICS = ("map50", "map50_95", "precision", "recall", "f1")
VIEW_FOLD_METRICS = {"accuracy": "view_accuracy", "macro_f1": "view_macro_f1"}


def pool_fold_predictions(
    fold_predictions: Mapping[int, dict], fold_test_images: Mapping[int, set[str]]
) -> dict:
    """One predictions document from the folds' test predictions (each image tagged with its
    fold); every fold must predict exactly its test images, and no image two folds."""
    if set(fold_predictions) != set(fold_test_images):
        raise ValueError(
            f"pooling: predictions for folds {sorted(fold_predictions)} but test splits for "
            f"folds {sorted(fold_test_images)}"
        )
    first = fold_predictions[min(fold_predictions)]
    images: list[dict] = []
    seen: dict[str, int] = {}
    for fold, data in sorted(fold_predictions.items()):
        for key in ("class_names", "view_names"):
            if data[key] != first[key]:
                raise ValueError(
                    f"pooling: fold {fold} has {key} {data[key]}, fold {min(fold_predictions)} "
                    f"{first[key]}"
                )
        names = [im["name"] for im in data["images"]]
        if set(names) != fold_test_images[fold] or len(names) != len(set(names)):
            missing = sorted(fold_test_images[fold] - set(names))[:3]
            extra = sorted(set(names) - fold_test_images[fold])[:3]
            raise ValueError(
                f"pooling: fold {fold}'s predictions are not exactly its test images "
                f"({len(names)} predicted, {len(fold_test_images[fold])} in its test split; "
                f"missing e.g. {missing}, extra e.g. {extra})"
            )
        for im in data["images"]:
            if im["name"] in seen:
                raise ValueError(
                    f"pooling: image {im['name']!r} is a test image of folds {seen[im['name']]} "
                    f"and {fold}"
                )
            seen[im["name"]] = fold
            images.append({**im, "fold": fold})
    return {
        "class_names": first["class_names"],
        "view_names": first["view_names"],
        "images": images,
    }


def fold_summary(fold: int, experiment: str, metrics: dict, n_patients: int) -> dict:
    """The per-fold values of one fold's ``metrics_test.json`` kept in the pooled file."""
    det = metrics["detection"] or {}  # null without a detector (view_only)
    cls = metrics.get("classification") or {}
    out: dict = {
        "fold": fold,
        "experiment": experiment,
        "n_images": metrics["n_images"],
        "n_patients": n_patients,
    }
    out.update({k: det.get(k) for k in FOLD_METRICS})
    out.update({name: cls.get(k) for k, name in VIEW_FOLD_METRICS.items()})
    return out


def check_folds_cover(fold_test_images: Mapping[int, set[str]], all_images: Sequence[str]) -> None:
    """The folds' test parts must partition the cohort (every image exactly once)."""
    union = [n for names in fold_test_images.values() for n in names]
    if len(union) != len(set(union)) or set(union) != set(all_images):
        raise ValueError(
            f"pooling: the folds' test splits hold {len(set(union))} distinct of "
            f"{len(union)} images, the cohort {len(set(all_images))}: they must partition it"
        )
