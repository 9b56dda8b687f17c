"""The names of what the evaluation measures and how a comparison is worded: one vocabulary for
the tidy table, the statistics, the tables, the figures and the text (a metric's key is its name
in ``tidy.csv``)."""

from __future__ import annotations

__all__ = [
    "METRIC_LABELS",
    "REPORTED_METRICS",
    "AXIS_METRICS",
    "TASK_METRICS",
    "STATISTICS_METRICS",
    "VIEW_METRICS",
    "FAMILY_LEVEL",
    "VERDICTS",
    "UNDECIDED",
    "INTERFERENCE_WORDS",
]

#: Every test metric the paper reports, in its order, with its printed name.
METRIC_LABELS = {
    "map50": "mAP@0.5",
    "map50_95": "mAP@0.5:0.95",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "view_accuracy": "View accuracy",
    "view_macro_f1": "View macro-F1",
}
REPORTED_METRICS = tuple(METRIC_LABELS)
#: The metrics an axis of the study (alpha, split, start) is read on.
AXIS_METRICS = ("map50", "map50_95", "view_accuracy")
#: One headline metric per task: detection, then view classification.
TASK_METRICS = ("map50", "view_accuracy")
#: The metrics the intervals and the paired comparisons cover (the verdicts the paper reports).
STATISTICS_METRICS = ("map50", "map50_95", "view_accuracy", "view_macro_f1")
#: The view-classification metrics (undefined for a model without a view head; the others are
#: detection metrics, undefined for a model without a detector).
VIEW_METRICS = ("view_accuracy", "view_macro_f1")
#: Family-wise error rate of the paired comparisons of one metric (Holm-Bonferroni).
FAMILY_LEVEL = 0.05
#: The words of a paired comparison (``statistics.verdict``); the last one decides nothing.
VERDICTS = ("higher", "lower", "not distinguishable at 95%")
UNDECIDED = VERDICTS[2]
#: The reading of an accumulated-gradient task cosine against its null band
#: (``evaluation.interference``): below it, above it, inside it.
INTERFERENCE_WORDS = ("conflict", "alignment", "inside the null band")
