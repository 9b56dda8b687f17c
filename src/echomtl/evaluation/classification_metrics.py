"""View-classification metrics (accuracy, macro-F1, confusion matrix).

Images whose true view is missing (``-1``) cannot be scored: they are excluded and counted in
``n_missing``. Macro-F1 averages the per-class F1 over the classes that occur among the evaluated
images, either as a true or as a predicted label; a view absent from both would contribute an
undefined 0/0 and is left out (scikit-learn would count it as 0 and warn).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["view_metrics"]


def view_metrics(true: Sequence[int], pred: Sequence[int], view_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and confusion matrix of view predictions.

    Args:
        true: true view index per image, ``-1`` when the view is missing.
        pred: predicted view index per image (same length).
        view_names: names in index order (they label the matrix).

    Returns:
        ``{"accuracy", "macro_f1", "n_evaluated", "n_missing", "labels", "confusion_matrix"}``;
        the matrix has rows = true view, columns = predicted view. With nothing to evaluate,
        accuracy and macro_f1 are NaN.
    """
    t = np.asarray(true, dtype=np.int64).reshape(-1)
    if len(pred) != t.size:
        raise ValueError(f"true and pred differ in length: {t.size} != {len(pred)}")
    k = len(view_names)
    labelled = t != -1
    if np.any((t < -1) | (t >= k)):
        raise ValueError(f"true view index outside -1..{k - 1}")
    p_sel = [pred[i] for i in np.flatnonzero(labelled)]
    if any(v is None for v in p_sel):
        raise ValueError("a labelled image has no view prediction")
    p = np.asarray(p_sel, dtype=np.int64).reshape(-1)
    if np.any((p < 0) | (p >= k)):
        raise ValueError(f"predicted view index outside 0..{k - 1}")
    t = t[labelled]
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    n = int(t.size)
    tp = np.diag(cm)
    support_true, support_pred = cm.sum(axis=1), cm.sum(axis=0)
    present = (support_true + support_pred) > 0
    f1 = 2 * tp[present] / (support_true[present] + support_pred[present])
    return {
        "accuracy": float(tp.sum() / n) if n else math.nan,
        "macro_f1": float(f1.mean()) if n else math.nan,
        "n_evaluated": n,
        "n_missing": int((~labelled).sum()),
        "labels": list(view_names),
        "confusion_matrix": cm.tolist(),
    }
