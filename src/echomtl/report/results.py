"""One read-only view of the study's results, shared by tables, figures and the paper context.

:func:`load_results` reads the files the workflow wrote (tidy table, bootstrap and paired JSONs,
selection JSONs, experiments table); :class:`Results` answers the questions the report asks
("test mAP@0.5 of the chosen manual experiment", "its interval", "how it compares with the
reference") and fails with a message naming the missing result instead of printing a blank.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from echomtl.atomic import PathLike, read_json
from echomtl.evaluation.selection import read_selections
from echomtl.evaluation.statistics import load_intervals, load_paired
from echomtl.evaluation.tidy import read_tidy
from echomtl.evaluation.vocabulary import (
    STATISTICS_METRICS,
    TASK_METRICS,
    UNDECIDED,
    VERDICTS,
    VIEW_METRICS,
)
from echomtl.methods import METHOD_LABELS, model_variant
from echomtl.report.labels import experiment_label, plain_text
from echomtl.report.latex import Tex
from echomtl.report.summaries import summarise_seeds
from echomtl.study import FRONT_DETECTION, GRADNORM_ALPHA, Study

__all__ = ["Results", "load_results", "METHOD_LABELS"]


@dataclass
class Results:
    """Everything measured, indexed for the report (see module docstring). The study's design
    (its rows, roles and axes) is ``study``'s; this class adds what the runs measured."""

    study: Study
    tidy: pd.DataFrame
    chosen: dict[str, str]
    selections: dict[str, dict] = field(default_factory=dict)
    intervals: dict[str, dict] = field(default_factory=dict)
    paired: dict[str, dict] = field(default_factory=dict)
    #: the cost of sharing and the fractions recovered (``stats/sharing.json``), or None
    sharing: dict | None = None
    #: the validation choices among groups (``Study.choices``: ``selection/choices/*.json``),
    #: by name
    choices: dict[str, dict] = field(default_factory=dict)
    summary: pd.DataFrame = field(init=False)

    @property
    def experiments(self) -> pd.DataFrame:
        return self.study.table

    @property
    def reference(self) -> str:
        return self.study.reference

    def __post_init__(self) -> None:
        self.summary = summarise_seeds(self.tidy)
        self._index = self.summary.set_index(["experiment", "split", "metric"]).sort_index()
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
        sel = self.selections.get(group) or self.choices.get(group) or {}
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
        return "cls" in model_variant(str(self.row(experiment)["model"])).tasks

    def recovery_rows(self) -> list[str]:
        """The shared-trunk methods of the main comparison whose recovery of the cost of sharing
        was measured (each main group's chosen row, table order); empty without it."""
        if self.sharing is None:
            return []
        measured = set(self.sharing["metrics"][TASK_METRICS[0]]["methods"])
        rows = [self.chosen.get(g) for g in self.study.main_groups]
        if self.alpha_chosen:  # GradNorm tuned as the grid is, beside its pre-set alpha
            at = rows.index(self.reference) + 1 if self.reference in rows else len(rows)
            rows.insert(at, self.alpha_chosen)
        return [e for e in dict.fromkeys(rows) if e in measured]

    @property
    def alpha_chosen(self) -> str | None:
        """GradNorm's row whose alpha was chosen on validation (``Study.choices``), or None."""
        choice = self.choices.get(GRADNORM_ALPHA)
        return None if choice is None else str(choice["chosen"])

    @property
    def front_optimal(self) -> str | None:
        """The detection-optimal fixed weight (``Study.choices``), or None."""
        choice = self.choices.get(FRONT_DETECTION)
        return None if choice is None else str(choice["chosen"])

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

    @functools.cached_property
    def compared(self) -> list[str]:
        """The main table's rows paired with the reference (on mAP@0.5), table order."""
        main = [self.chosen[g] for g in self.study.main_groups]
        return [e for e in main if e != self.reference and self.pair(e, "map50") is not None]

    @functools.cached_property
    def verdicts(self) -> dict[str, dict[str, list[str]]]:
        """``{metric: {verdict: [experiment, ...]}}``: every paired verdict of the main comparison
        (:attr:`compared`), per metric the statistics hold; the tables and the text count these.
        On a detection metric an isolated control whose detector is by design an earlier one's
        (``Study.same_detector``) is not a comparison of its own: one detector, counted once, as
        in the Holm family."""

        def counted(e: str, m: str) -> bool:
            return m in VIEW_METRICS or e not in self.study.same_detector

        return {
            m: {
                v: [
                    e
                    for e in self.compared
                    if counted(e, m) and (self.pair(e, m) or {}).get("verdict") == v
                ]
                for v in VERDICTS
            }  # fmt: skip
            for m in STATISTICS_METRICS
        }

    def undecided_mdds(self, metric: str) -> list[float]:
        """Minimum detectable differences of the comparisons not decided on ``metric``."""
        mdds = [self.pair(e, metric).get("mdd") for e in self.verdicts[metric][UNDECIDED]]
        return [float(x) for x in mdds if x is not None and not math.isnan(float(x))]

    def front_rivals(self) -> list[str]:
        """Every other configuration of the study with both metrics, placed against the front:
        the main table's (its order), then the reference's alpha and augmentation variants."""
        front = set(self.study.front_runs)
        t = self.experiments
        main = [self.chosen[g] for g in self.study.main_groups]
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
    study: Study,
    selection_files: Iterable[PathLike] = (),
    interval_files: Iterable[PathLike] = (),
    paired_files: Iterable[PathLike] = (),
    sharing_files: Iterable[PathLike] = (),
    choice_files: Iterable[PathLike] = (),
) -> Results:
    """Read everything :class:`Results` needs from the workflow's files."""
    chosen, selections = read_selections(selection_files, study)
    return Results(
        study=study,
        tidy=read_tidy(tidy_csv),
        chosen=chosen,
        selections=selections,
        intervals=load_intervals(interval_files),
        paired=load_paired(paired_files, study.reference, study.same_detector),
        sharing=next((read_json(f) for f in sharing_files), None),
        choices={c["group"]: c for c in map(read_json, choice_files)},
    )
