"""One read-only view of the study's results, shared by tables, figures and the paper context.

:func:`load_results` reads the files the workflow wrote (tidy table, bootstrap and paired JSONs,
selection JSONs, experiments table); :class:`Results` answers the questions the report asks
("test mAP@0.5 of the chosen manual experiment", "its interval", "how it compares with the
reference") and fails with a message naming the missing result instead of printing a blank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

from echomtl.config import SETTINGS
from echomtl.methods import METHOD_LABELS, METHODS
from echomtl.report._io import PathLike
from echomtl.report.aggregate import load_experiments_table, read_selections, read_tidy
from echomtl.report.labels import experiment_label, plain_text
from echomtl.report.latex import Tex
from echomtl.report.stats import load_intervals, load_paired, summarise_seeds

__all__ = ["Results", "load_results", "METHOD_LABELS", "METRIC_LABELS"]

#: torchjd aggregators (methods that come from the torchjd library).
TORCHJD_METHODS = tuple(name for name, m in METHODS.items() if m.kind == "aggregation")
METRIC_LABELS = {
    "map50": "mAP@0.5",
    "map50_95": "mAP@0.5:0.95",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "view_accuracy": "View accuracy",
    "view_macro_f1": "View macro-F1",
}


@dataclass
class Results:
    """Everything measured, indexed for the report (see module docstring)."""

    experiments: pd.DataFrame
    tidy: pd.DataFrame
    chosen: dict[str, str]
    selections: dict[str, dict] = field(default_factory=dict)
    intervals: dict[str, dict] = field(default_factory=dict)
    paired: dict[str, dict] = field(default_factory=dict)
    reference: str = "gradnorm_a1.5"
    summary: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarise_seeds(self.tidy)
        self._index = self.summary.set_index(["experiment", "split", "metric"]).sort_index()
        if self.reference not in self.experiments.index:
            raise ValueError(
                f"reference experiment {self.reference!r} (config report.reference_method) is "
                "not in the experiments table"
            )
        if self.reference not in set(self.tidy["experiment"]):
            raise ValueError(f"no results for the reference experiment {self.reference!r}")

    # ---- plain values -------------------------------------------------------------------
    def has(self, experiment: str, metric: str, split: str = "test") -> bool:
        """Whether a finite value was measured."""
        return (experiment, split, metric) in self._index.index

    def mean(self, experiment: str, metric: str, split: str = "test") -> float:
        """Mean over seeds; KeyError naming the result when it was not measured."""
        try:
            return float(self._index.loc[(experiment, split, metric), "mean"])
        except KeyError:
            raise KeyError(f"no {split} {metric!r} measured for {experiment!r}") from None

    def get(self, experiment: str, metric: str, split: str = "test") -> float:
        """Mean over seeds, NaN when not measured (for optional cells)."""
        return (
            self.mean(experiment, metric, split)
            if self.has(experiment, metric, split)
            else math.nan
        )

    def std(self, experiment: str, metric: str, split: str = "test") -> float:
        """Std over seeds (NaN with one seed)."""
        if not self.has(experiment, metric, split):
            return math.nan
        return float(self._index.loc[(experiment, split, metric), "std"])

    def n_seeds(self, experiment: str, metric: str = "map50", split: str = "test") -> int:
        """Number of seeds with a finite value."""
        if not self.has(experiment, metric, split):
            return 0
        return int(self._index.loc[(experiment, split, metric), "n_seeds"])

    def interval(self, experiment: str, metric: str) -> dict | None:
        """Bootstrap interval ``{"point", "mean", "low", "high"}`` or None when not computed."""
        entry = self.intervals.get(experiment, {}).get(metric)
        if entry is None or any(
            entry.get(k) is None or math.isnan(entry.get(k)) for k in ("low", "high")
        ):
            return None
        return entry

    def pair(self, other: str, metric: str) -> dict | None:
        """Paired result ``reference - other`` (with ``verdict``) or None when undefined."""
        entry = self.paired.get(other, {}).get(metric)
        if entry is None or entry.get("verdict") is None:
            return None
        return entry

    def fold_values(self, experiment: str, metric: str) -> list[float]:
        """Per-fold test values of a cross-validated experiment (seed means), fold order;
        empty for a holdout run."""
        prefix = "fold"
        names = sorted(
            {
                m
                for m in self.tidy.loc[self.tidy["experiment"] == experiment, "metric"]
                if m.startswith(prefix)
                and m.endswith(f"/{metric}")
                and m[len(prefix) : -len(metric) - 1].isdigit()
            },
            key=lambda m: int(m[len(prefix) : -len(metric) - 1]),
        )
        return [self.get(experiment, m) for m in names]

    def fold_choices(self, experiment: str) -> list[str]:
        """The configuration each fold chose, for a per-fold selection (composite) row; empty
        for any other experiment."""
        group = self.row(experiment)["group"]
        sel = self.selections.get(group) or {}
        if sel.get("chosen") != experiment or "per_fold" not in sel:
            return []
        return [str(f["chosen"]) for f in sorted(sel["per_fold"], key=lambda f: f["fold"])]

    def n_folds(self) -> int:
        """Outer folds of the cross-validated study (0 for a holdout study)."""
        return len(self.fold_values(self.reference, "map50"))

    # ---- experiments --------------------------------------------------------------------
    def row(self, experiment: str) -> pd.Series:
        """The experiments-table row."""
        return self.experiments.loc[experiment]

    def has_classifier(self, experiment: str) -> bool:
        """Whether the model predicts views."""
        return self.row(experiment)["model"] != "det_only"

    def is_split_variant(self, experiment: str) -> bool:
        """Whether the run used another split scheme than the study (the split axis)."""
        return bool(self.row(experiment)["split_variant"])

    @property
    def study_init(self) -> str:
        """The start of the reference's networks: the study's start (``scratch``/``pretrained``)."""
        return str(self.row(self.reference)["init"])

    def is_init_variant(self, experiment: str) -> bool:
        """Whether the run started otherwise than the study (the init axis)."""
        return str(self.row(experiment)["init"]) != self.study_init

    def _axis_pairs(self, axis: str, is_variant: Callable[[str], bool]) -> list[tuple[str, str]]:
        """``(study run, variant)`` pairs that both ran: rows equal in every setting but ``axis``
        (a per-fold composite is never the study run of a pair)."""
        t = self.experiments
        keys = [k for k in SETTINGS if k != axis and k in t]

        def same(a: str, b: str) -> bool:
            return all(
                (t.at[a, k] == t.at[b, k]) or (pd.isna(t.at[a, k]) and pd.isna(t.at[b, k]))
                for k in keys
            )

        pairs = []
        for variant in [e for e in t.index if is_variant(e)]:
            composite = t["per_fold_selection"].astype(bool)
            match = [e for e in t.index[~composite] if not is_variant(e) and same(e, variant)]
            if match and self.ran(match[0]) and self.ran(variant):
                pairs.append((str(match[0]), str(variant)))
        return pairs

    def init_pairs(self) -> list[tuple[str, str]]:
        """``(study run, init variant)`` pairs that both ran: rows equal but for the start."""
        return self._axis_pairs("init", self.is_init_variant)

    def split_pairs(self) -> list[tuple[str, str]]:
        """``(study run, split variant)`` pairs that both ran: rows equal but for the split."""
        return self._axis_pairs("split", self.is_split_variant)

    def ran(self, experiment: str) -> bool:
        """Whether results exist for the experiment."""
        return experiment in set(self.tidy["experiment"])

    def label(self, experiment: str, with_group_value: bool = True) -> Tex:
        """Display name (LaTeX) built from the experiments table."""
        return experiment_label(self.experiments, experiment, with_group_value)

    def plain_label(self, experiment: str) -> str:
        """Display name for figures: unicode, and matplotlib mathtext for the task weights (never a
        raw ``w_cls``)."""
        return plain_text(self.label(experiment))

    def group_label(self, group: str) -> Tex:
        """Display name of a group's chosen experiment; a dagger marks a validation choice."""
        label = self.label(self.chosen[group])
        if group in self.selections and len(self.selections[group]["candidates"]) > 1:
            return Tex(f"{label}$^\\dagger$")
        return label

    def groups(self) -> list[str]:
        """Groups in table order, only those that ran (split variants are not study groups)."""
        return [g for g, e in self.chosen.items() if self.ran(e) and not self.is_split_variant(e)]

    def reference_variants(self) -> tuple[list[str], str | None]:
        """``(alpha variants, augmentation variant)`` of the reference method.

        Alpha variants: experiments with the reference's method, model, weights and augmentation
        but any alpha (reference included), sorted by alpha. Augmentation variant: the one
        differing from the reference only in ``augment``.
        """
        ref = self.row(self.reference)
        same = self.experiments[
            (self.experiments["method"] == ref["method"])
            & (self.experiments["model"] == ref["model"])
            & (self.experiments["init"] == ref["init"])
            & ~self.experiments["split_variant"]
        ]
        same = same[[self.ran(e) for e in same.index]]
        alphas = same[same["augment"] == ref["augment"]]
        for col in ("w_det", "w_cls"):
            alphas = alphas[alphas[col] == ref[col]]
        alpha_list = list(alphas.sort_values("alpha", kind="stable").index)
        aug = same[(same["augment"] != ref["augment"])]
        aug = aug[(aug["alpha"] == ref["alpha"]) & (aug["w_cls"] == ref["w_cls"])]
        return alpha_list, (str(aug.index[0]) if len(aug) else None)

    def main_groups(self) -> list[str]:
        """Groups of the main table: all, except the reference's alpha/augmentation variants and
        the runs of the other start (their own table, beside their study runs)."""
        alphas, aug = self.reference_variants()
        variants = {a for a in alphas if a != self.reference} | ({aug} if aug else set())
        variants |= {v for _, v in self.init_pairs()}
        return [g for g in self.groups() if self.chosen[g] not in variants]

    def front_runs(self) -> list[str]:
        """Fixed-weight multi-task runs of the study (the fixed-weight front), by ``w_cls``."""
        t = self.experiments
        rows = t[
            (t["model"] == "multitask")
            & (t["method"] == "fixed")
            & (t["init"] == self.study_init)
            & ~t["split_variant"]
            & ~t["per_fold_selection"]
        ]
        names = [e for e in rows.index if self.has(e, "map50") and self.has(e, "view_accuracy")]
        return sorted(names, key=lambda e: (float(t.loc[e, "w_cls"]), float(t.loc[e, "w_det"])))

    def front_rivals(self) -> list[str]:
        """Every other configuration of the study with both metrics, placed against the front:
        the main table's (its order), then the reference's alpha and augmentation variants."""
        front = set(self.front_runs())
        t = self.experiments
        main = [self.chosen[g] for g in self.main_groups()]
        rest = [e for e in t.index if self.ran(e) and not bool(t.at[e, "split_variant"])
                and not bool(t.at[e, "per_fold_selection"])]  # fmt: skip
        out: list[str] = []
        for e in main + rest:
            if (
                e not in front
                and e not in out
                and self.has(e, "map50")
                and self.has(e, "view_accuracy")
            ):
                out.append(str(e))
        return out

    def class_names(self) -> list[str]:
        """Detection class names, in the order the metrics JSON gave them."""
        names = [m.split("/", 1)[1] for m in self.tidy["metric"].unique() if m.startswith("ap50/")]
        return list(dict.fromkeys(names))

    def seeds(self) -> list[int]:
        """Seeds present in the results."""
        return sorted(int(s) for s in self.tidy["seed"].unique())


def load_results(
    tidy_csv: PathLike,
    experiments: pd.DataFrame | PathLike,
    selection_files: Iterable[PathLike] = (),
    interval_files: Iterable[PathLike] = (),
    paired_files: Iterable[PathLike] = (),
    reference: str = "gradnorm_a1.5",
) -> Results:
    """Read everything :class:`Results` needs from the workflow's files."""
    table = load_experiments_table(experiments)
    chosen, selections = read_selections(selection_files, table)
    paired = load_paired(paired_files, reference)
    return Results(
        experiments=table,
        tidy=read_tidy(tidy_csv),
        chosen=chosen,
        selections=selections,
        intervals=load_intervals(interval_files),
        paired=paired,
        reference=reference,
    )
