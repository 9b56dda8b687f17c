"""The study: its experiments, the part each one plays and which tables and figures it has.

Built once, from the validated config and the experiments table(s), before any job:
``rules/common.smk`` asks it for the targets, the ``plan_study`` rule writes it as ``study.json``
and the evaluation and report jobs read it back. Every question about the study's *design* is
answered here and nowhere else ("which rows are GradNorm's alpha grid?", "does the paper have an
augmentation table?"), so the workflow's targets and the paper's sections cannot disagree.
Questions about *outcomes* (did detection learn, which grid row won on validation) belong to the
evaluation and report stages.

Pure: no torch, no Snakemake, no file written (unit-tested on its own); only a table given by
path is read, through ``echomtl.config``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echomtl.atomic import json_clean
from echomtl.methods import ISOLATED_DETECTORS, METHODS

__all__ = [
    "SETTINGS",
    "GRID_SETTINGS",
    "INITS",
    "COLUMNS",
    "ROLES",
    "FLAGS",
    "Study",
    "as_table",
    "resolve_inits",
    "train_parameters",
    "TrainParams",
]

#: The experiments-table columns that make two rows the same configuration: two rows may not
#: share all of them, and an axis of the study (split, init) is one of them varied.
SETTINGS = ("method", "model", "w_det", "w_cls", "alpha", "augment", "scale", "split", "init")
#: The settings a grid group's rows may vary in and still be one configuration chosen per fold
#: under cross-validation (the composite row leaves them empty).
GRID_SETTINGS = ("w_det", "w_cls", "alpha")

#: the names of the validation choices among rows of different groups (:attr:`Study.choices`)
FRONT_DETECTION = "front_detection"
GRADNORM_ALPHA = "gradnorm_alpha"
#: what each choice chooses (a per-fold composite row's description under cv)
CHOICE_DESCRIPTIONS = {
    FRONT_DETECTION: "Detection-optimal fixed weight of the front",
    GRADNORM_ALPHA: "GradNorm, alpha",
}
#: Starts of a run (experiments column ``init``): random weights, or config ``model.weights``.
INITS = ("scratch", "pretrained")
#: Every column of the study's table: the name, group and description, the settings, and two
#: the study derives (``split_variant``: the row's split is not the study's; ``per_fold_selection``:
#: a grid group's per-fold choice under cv, never trained).
COLUMNS = ("experiment", "group", *SETTINGS, "description", "split_variant", "per_fold_selection")
_NUMERIC = ("w_det", "w_cls", "alpha")
_FLAGS_OF_ROWS = ("split_variant", "per_fold_selection", "augment")

#: The roles a group of the study can play, each a test on the group's first row; a role goes to
#: the first group (table order) of the study's start that passes it.
ROLES: dict[str, Callable[[pd.Series, int], bool]] = {
    "det_only": lambda r, n: r["model"] == "det_only",
    "view_only": lambda r, n: r["model"] == "view_only",
    "dual": lambda r, n: r["model"] == "dual_backbone",
    "stopgrad": lambda r, n: r["model"] == "stopgrad",
    "fixed": lambda r, n: r["model"] == "multitask" and r["method"] == "fixed" and n == 1,
    "manual": lambda r, n: r["model"] == "multitask" and r["method"] == "fixed" and n > 1,
    "uncertainty": lambda r, n: r["method"] == "uncertainty",
    "rlw": lambda r, n: r["method"] == "rlw",
}

#: Every flag of the plan (what the study has), with what sets it. Tables and figures are
#: conditioned on these names (``echomtl.report.outputs``), and so are the paper's sections.
FLAGS = {
    "alpha": "two or more GradNorm alphas beside the reference, all else equal",
    "augmentation": "the reference with the other augmentation setting, all else equal",
    "dual_backbone": "a dual-backbone group",
    "stopgrad": "a stop-gradient group",
    "det_only": "a detector-alone group",
    "view_only": "a view-classifier-alone group",
    "sharing": "an isolated detector, a view classifier alone and fixed weights (sharing's cost)",
    "interference": "fixed weights or the reference on a shared trunk (accumulated gradients)",
    "fixed": "a single fixed-weight multi-task group",
    "manual": "a fixed-weight multi-task grid (a group of several rows)",
    "traditional": "fixed or manually tuned weights",
    "front": "two or more fixed-weight multi-task runs (the fixed-weight front)",
    "front_detection": "the front: its detection-optimal weight is chosen (per fold under cv)",
    "alpha_choice": "two or more GradNorm alphas: one is chosen on validation (per fold under cv)",
    "uncertainty": "an uncertainty-weighting group",
    "torchjd": "a torchjd aggregator group",
    "gradnorm": "the reference is GradNorm",
    "diagnostics": "a shared-trunk run (gradient diagnostics)",
    "split": "a split variant paired with a study row",
    "init": "a row of the other start paired with a study row",
    "comparisons": "a main-table row besides the reference",
    "pretrained": "the study starts from the checkpoint",
    "cv": "the study is cross-validated",
    "multi_seed": "more than one seed",
}


def resolve_inits(
    experiments: pd.DataFrame, has_weights: bool, table: str | Sequence[str]
) -> pd.Series:
    """Each experiment's start: its ``init`` column, or the config's default when empty.

    The default is ``pretrained`` when ``model.weights`` is set, else ``scratch``. A
    ``pretrained`` row without ``model.weights`` is an error naming the table and the rows.
    """
    default = "pretrained" if has_weights else "scratch"
    column = experiments["init"] if "init" in experiments else pd.Series(None, experiments.index)
    inits = column.where(column.notna() & (column != ""), default)
    orphans = [str(n) for n in inits.index if inits[n] == "pretrained" and not has_weights]
    if orphans:
        raise ValueError(
            f"invalid experiments table {table}: experiments {', '.join(orphans)} have init "
            "'pretrained' but config model.weights is null: set model.weights to a YOLOv5 "
            "checkpoint (docs/pretrained.md) or make the rows 'scratch'"
        )
    return inits


@dataclass
class TrainParams:
    """Everything that shapes a training run (its hash guards resume).

    Every field is required: the values come from the configuration (:func:`train_parameters`),
    whose schema holds the defaults. The names and their order are part of ``weights.pt`` and of
    the resume fingerprint. Pure data: the balancers and the trainer read it.
    """

    experiment: str
    seed: int
    model: str
    scale: str
    class_names: list[str]
    view_names: list[str]
    imgsz: int
    epochs: int
    batch_size: int
    method: str
    w_det: float
    w_cls: float
    augment: bool
    hyp: dict[str, float]
    alpha: float | None
    attach_layer: int
    cls_dropout: float
    nominal_batch: int
    cos_lr: bool
    grad_clip: float
    ema: bool
    gradnorm: dict[str, Any]
    diagnostics_every: int
    amp: str
    warmup_min_iterations: int
    #: "scratch" (random weights) or "pretrained" (every network from an official checkpoint)
    init: str
    #: the checkpoint's SHA-256: a run from another file is another run (fingerprint, metadata)
    weights_sha256: str | None

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> TrainParams:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"unknown training parameters: {', '.join(unknown)}")
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"missing training parameters: {', '.join(missing)}")
        return cls(**params)


def train_parameters(
    config: Mapping[str, Any], row: pd.Series, seed: int, weights_sha256: str | None
) -> dict[str, Any]:
    """Every parameter of one training run (:class:`TrainParams`' fields), from the validated
    config (which holds every default: the schema's) and the experiment's row;
    ``weights_sha256`` is the checkpoint's digest, kept only for a run that starts from it. The
    workflow and the benchmarks build a run's parameters here and nowhere else."""
    train, model, alpha = config["train"], config["model"], row["alpha"]
    return {
        "experiment": str(row["experiment"]),
        "seed": int(seed),
        "model": row["model"],
        "scale": row["scale"] if isinstance(row["scale"], str) and row["scale"] else model["scale"],
        "class_names": list(config["data"]["class_names"]),
        "view_names": list(config["data"]["view_names"]),
        "imgsz": model["imgsz"],
        "epochs": train["epochs"],
        "batch_size": train["batch_size"],
        "nominal_batch": train["nominal_batch"],
        "method": row["method"],
        "w_det": float(row["w_det"]),
        "w_cls": float(row["w_cls"]),
        "alpha": None if alpha is None or alpha != alpha else float(alpha),
        "augment": bool(row["augment"]),
        "hyp": dict(train["hyp"]),
        "attach_layer": model["attach_layer"],
        "cls_dropout": model["cls_dropout"],
        "cos_lr": train["cos_lr"],
        "grad_clip": train["grad_clip"],
        "ema": train["ema"],
        "gradnorm": dict(config["balancing"].get("gradnorm", {})),
        "diagnostics_every": config["balancing"]["diagnostics_every"],
        "amp": train["amp"],
        "warmup_min_iterations": train["warmup_min_iterations"],
        "init": row["init"],
        "weights_sha256": weights_sha256 if row["init"] == "pretrained" else None,
    }


def _as_bool(value: Any, column: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no", "", "nan", "none"}:
        return False
    raise ValueError(f"{column}: {value!r} is not a boolean")


def as_table(experiments: Study | pd.DataFrame | str | Path) -> pd.DataFrame:
    """The study's table: of a :class:`Study`, of a frame (typed and completed), or of an
    experiments TSV (read and validated)."""
    if isinstance(experiments, Study):
        return experiments.table
    if not isinstance(experiments, pd.DataFrame):
        from echomtl.config import load_experiments

        experiments = load_experiments(Path(experiments))
    return _normalise(experiments)


def _normalise(table: pd.DataFrame) -> pd.DataFrame:
    """The table with every column of :data:`COLUMNS`, typed (floats, booleans, strings)."""
    table = table.copy()
    if "experiment" not in table:
        table["experiment"] = table.index
    table = table.set_index("experiment", drop=False)
    table.index = table.index.astype(object)
    table.index.name = None
    missing = [c for c in ("group", "method", "model", "w_det", "w_cls") if c not in table]
    if missing:
        raise ValueError(f"experiments table lacks columns {missing}")
    if table.index.duplicated().any():
        raise ValueError(f"duplicate experiments: {sorted(table.index[table.index.duplicated()])}")
    for column in COLUMNS:
        if column not in table:
            table[column] = False if column in _FLAGS_OF_ROWS else None
    for column in _FLAGS_OF_ROWS:
        table[column] = table[column].map(lambda v, c=column: _as_bool(v, c))
    for column in _NUMERIC:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table["init"] = table["init"].where(table["init"].notna(), "scratch")
    text = [c for c in COLUMNS if c not in _NUMERIC and c not in _FLAGS_OF_ROWS]
    table[text] = table[text].astype(object)  # one dtype however the table was read
    return table[list(COLUMNS)]


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) or (pd.isna(a) and pd.isna(b))


def _non_grid_differences(members: pd.DataFrame) -> list[str]:
    """The settings outside ``GRID_SETTINGS`` in which the rows differ: a per-fold composite
    can describe its folds' choices truthfully only when there are none."""
    return [c for c in SETTINGS if c not in GRID_SETTINGS
            and members[c].astype(str).nunique() > 1]  # fmt: skip


def _composite_row(members: pd.DataFrame, name: str, group: str, description: str) -> pd.Series:
    """The never-trained row that pools the members each fold chose: their settings where
    they agree, empty where a grid setting varies."""
    row = members.iloc[0].copy()
    for column in GRID_SETTINGS:
        if members[column].astype(str).nunique() > 1:
            row[column] = math.nan
    row["experiment"], row["group"], row["description"] = name, group, description
    row["per_fold_selection"] = True
    return row.rename(name)


@dataclass(frozen=True)
class Study:
    """The experiments of one configured study and everything their design decides.

    ``table`` has the columns of :data:`COLUMNS`, one row per experiment in table order (the
    per-fold composite rows of cross-validated grid groups included, after the group's rows).
    """

    table: pd.DataFrame
    reference: str
    seeds: tuple[int, ...] = (0,)
    cv_folds: int = 0
    #: seeds only the decisive runs (:attr:`decisive`) train, after ``seeds``
    decisive_seeds: tuple[int, ...] = ()

    # ---- building ----------------------------------------------------------------------
    @classmethod
    def plan(
        cls,
        experiments: pd.DataFrame,
        *,
        reference: str,
        split_scheme: str,
        seeds: Sequence[int] = (0,),
        cv_folds: int = 0,
        source: str | Sequence[str] = "experiments",
        decisive_seeds: Sequence[int] = (),
    ) -> Study:
        """The study of a validated experiments table (``init`` already resolved).

        Fills the split axis (an empty split is ``split_scheme``; another split makes a split
        variant), refuses two rows of the same settings and a reference that is not a study row,
        and adds, under cv, one composite row per grid group (its configuration chosen per fold).
        Errors name the table (``source``) and the config key.
        """
        t = experiments.copy()
        t["split"] = t["split"].fillna(split_scheme).replace("", split_scheme)
        t["split_variant"] = t["split"] != split_scheme
        same = t[t.astype(str).duplicated(list(SETTINGS), keep=False)]
        if len(same):
            raise ValueError(
                f"{source}: experiments {', '.join(same.index)} have the same settings "
                f"({', '.join(SETTINGS)}; an empty split means data.split_scheme "
                f"{split_scheme!r}): one run would be reported twice"
            )
        if reference not in t.index:
            raise ValueError(
                f"config report.reference_method: {reference!r} is not an experiment of "
                f"{source} (known: {', '.join(t.index)})"
            )
        if t.loc[reference, "split_variant"]:
            raise ValueError(
                f"config report.reference_method: {reference!r} uses split "
                f"{t.loc[reference, 'split']!r}, not the study's data.split_scheme "
                f"{split_scheme!r}"
            )
        t = _normalise(t)
        mixed = [g for g, rows in t.groupby("group", sort=False)
                 if rows["split_variant"].nunique() > 1]  # fmt: skip
        if mixed:
            raise ValueError(
                f"{source}: group(s) {mixed} mix rows on the study's split with split "
                "variants; give each split variant a group of its own"
            )
        reserved = sorted(set(t["group"]) & set(CHOICE_DESCRIPTIONS))
        if reserved:
            raise ValueError(
                f"{source}: group name(s) {reserved} are reserved for the validation choices "
                "among groups (echomtl.study.Study.choices); rename the group"
            )
        study = t[~t["split_variant"]]
        composites = []
        for group, members in study.groupby("group", sort=False):
            if len(members) < 2 or not (members["split"] == "cv").all():
                continue
            name = f"{group}_per_fold"
            if name in t.index:
                raise ValueError(
                    f"{source}: experiment name {name!r} is reserved for the per-fold selection "
                    f"of group {group!r}"
                )
            differ = _non_grid_differences(members)
            if differ:  # the composite row must describe every fold's choice truthfully
                raise ValueError(
                    f"{source}: group {group!r} is selected per fold under cv, so its rows may "
                    f"differ only in {', '.join(GRID_SETTINGS)}; they differ in "
                    f"{', '.join(differ)}"
                )
            description = f"{group}: configuration chosen per fold on validation"
            composites.append(_composite_row(members, name, str(group), description))
        if composites:
            t = pd.concat([t, pd.DataFrame(composites)])
            t = _normalise(t)
        # A decisive seed that every run has already is no extra run: an overlay that gives every
        # run three seeds (config/paper.yaml) leaves the decisive runs with those three.
        extra = tuple(sorted(int(s) for s in set(decisive_seeds) - set(seeds)))
        study = cls(t, reference, tuple(int(s) for s in seeds), int(cv_folds), extra)
        return study._with_choice_composites(source)

    def _with_choice_composites(self, source: str | Sequence[str]) -> Study:
        """Under cv, one composite row per validation choice among groups (:attr:`choices`):
        each fold's test images predicted by the candidate that fold's validation chose, as a
        grid group's composite is. The row's group is the choice's name; its settings are the
        candidates' where they agree and empty where they vary (``GRID_SETTINGS`` only)."""
        rows = []
        for name, candidates in self.choices.items():
            members = self.table.loc[candidates]
            if not (members["split"] == "cv").all():
                continue
            composite = f"{name}_per_fold"
            if composite in self.table.index:
                raise ValueError(
                    f"{source}: experiment name {composite!r} is reserved for the per-fold "
                    f"validation choice {name!r}"
                )
            differ = _non_grid_differences(members)
            assert not differ, f"the candidates of {name} differ in {differ}"
            description = CHOICE_DESCRIPTIONS[name] + ", chosen per fold on validation"
            rows.append(_composite_row(members, composite, name, description))
        if not rows:
            return self
        table = _normalise(pd.concat([self.table, pd.DataFrame(rows)]))
        return Study(table, self.reference, self.seeds, self.cv_folds, self.decisive_seeds)

    @classmethod
    def from_table(
        cls, table: pd.DataFrame | str | Path, reference: str, seeds: Sequence[int] = (0,)
    ) -> Study:
        """A study of a table whose split axis and composites are already filled in (a table
        written by hand for a test or a notebook; a path is read and validated)."""
        t = as_table(table)
        if reference not in t.index:
            raise ValueError(
                f"reference experiment {reference!r} (config report.reference_method) is not in "
                "the experiments table"
            )
        return cls(t, reference, tuple(int(s) for s in seeds))

    # ---- study.json ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        rows = [{c: json_clean(self.table.at[n, c]) for c in COLUMNS} for n in self.table.index]
        return {
            "reference": self.reference,
            "seeds": list(self.seeds),
            "decisive_seeds": list(self.decisive_seeds),
            "cv_folds": self.cv_folds,
            "flags": self.flags,
            "roles": self.roles,
            "rows": rows,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Study:
        table = pd.DataFrame(list(data["rows"]), columns=list(COLUMNS))
        return cls(_normalise(table), str(data["reference"]), tuple(data["seeds"]),
                   int(data["cv_folds"]), tuple(data.get("decisive_seeds", ())))  # fmt: skip

    @classmethod
    def read(cls, path: str | Path) -> Study:
        """A ``study.json`` written by the ``plan_study`` rule."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a study.json of echomtl.study ({exc})") from None

    # ---- rows ----------------------------------------------------------------------------
    def row(self, name: str) -> pd.Series:
        return self.table.loc[name]

    @property
    def names(self) -> list[str]:
        return list(self.table.index)

    def _where(self, mask: Iterable[bool]) -> list[str]:
        return [str(n) for n, keep in zip(self.table.index, mask, strict=True) if keep]

    @functools.cached_property
    def study(self) -> list[str]:
        """The rows of the result tables: not split variants."""
        return self._where(~self.table["split_variant"])

    @functools.cached_property
    def trained(self) -> list[str]:
        """Every experiment that trains (all but the per-fold composites)."""
        return self._where(~self.table["per_fold_selection"])

    @functools.cached_property
    def composite(self) -> list[str]:
        return self._where(self.table["per_fold_selection"])

    @functools.cached_property
    def cv(self) -> list[str]:
        """Cross-validated experiments (one run per outer fold)."""
        return self._where(self.table["split"] == "cv")

    @functools.cached_property
    def holdout(self) -> list[str]:
        return [n for n in self.names if n not in self.cv]

    @functools.cached_property
    def trained_study(self) -> list[str]:
        return [n for n in self.study if n in self.trained]

    @functools.cached_property
    def multitask(self) -> list[str]:
        """Trained shared-trunk study runs: they log gradient diagnostics."""
        return [n for n in self.trained_study if self.row(n)["model"] == "multitask"]

    @functools.cached_property
    def gradnorm(self) -> list[str]:
        """Trained GradNorm study runs: they log their task weights."""
        return [n for n in self.trained_study if self.row(n)["method"] == "gradnorm"]

    def members(self, group: str) -> list[str]:
        """The trained rows of a group."""
        return [n for n in self.trained if self.row(n)["group"] == group]

    def candidates(self, composite: str) -> list[str]:
        """The trained rows a per-fold composite chooses among on each fold: its grid group's,
        or a choice's (:attr:`choices`) when its group is the choice's name."""
        group = str(self.row(composite)["group"])
        return list(self.choices[group]) if self.is_choice(group) else self.members(group)

    def is_choice(self, group: str) -> bool:
        """Whether a group is a per-fold validation choice among groups (its one row is the
        composite), not a group of the experiments table: the choices' names are reserved."""
        return group in CHOICE_DESCRIPTIONS

    @functools.cached_property
    def shared_trunk(self) -> list[str]:
        """The study's shared-trunk results: the trained runs (:attr:`multitask`), then the
        per-fold composites among them (pooled predictions of the runs each fold chose)."""
        composites = [n for n in self.composite if self.row(n)["model"] == "multitask"]
        return [*self.multitask, *composites]

    @functools.cached_property
    def grid_groups(self) -> list[str]:
        """Groups with more than one trained row: chosen on validation (sorted by name)."""
        counts = self.table.loc[self.trained, "group"].value_counts()
        return sorted(str(g) for g, n in counts.items() if n > 1)

    # ---- the start and the axes ------------------------------------------------------------
    @property
    def start(self) -> str:
        """The study's start (the reference's): ``scratch`` or ``pretrained``."""
        return str(self.row(self.reference)["init"])

    def is_split_variant(self, name: str) -> bool:
        return bool(self.row(name)["split_variant"])

    def is_init_variant(self, name: str) -> bool:
        return str(self.row(name)["init"]) != self.start

    def _pairs(self, axis: str, is_variant: Callable[[str], bool]) -> list[tuple[str, str]]:
        """``(study row, variant)``: rows equal in every setting but ``axis`` (a per-fold
        composite is never the study row of a pair)."""
        t = self.table
        keys = [k for k in SETTINGS if k != axis]
        pairs = []
        for variant in [n for n in self.names if is_variant(n)]:
            match = [n for n in self.trained if not is_variant(n)
                     and all(_same(t.at[n, k], t.at[variant, k]) for k in keys)]  # fmt: skip
            if match:
                pairs.append((match[0], variant))
        return pairs

    @functools.cached_property
    def init_pairs(self) -> list[tuple[str, str]]:
        """``(study row, row of the other start)``: equal but for ``init``."""
        return self._pairs("init", self.is_init_variant)

    @functools.cached_property
    def split_pairs(self) -> list[tuple[str, str]]:
        """``(study row, split variant)``: equal but for ``split``."""
        return self._pairs("split", self.is_split_variant)

    def _of_start(self) -> pd.DataFrame:
        """The study's rows (not split variants) of the study's start."""
        t = self.table
        return t[~t["split_variant"] & (t["init"] == self.start)]

    @functools.cached_property
    def alpha_variants(self) -> list[str]:
        """The reference method's rows that differ from the reference at most in ``alpha``
        (the reference included), by alpha."""
        ref, t = self.row(self.reference), self._of_start()
        same = t[(t["method"] == ref["method"]) & (t["model"] == ref["model"])]
        same = same[(same["augment"] == ref["augment"]) & (same["w_det"] == ref["w_det"])]
        same = same[(same["w_cls"] == ref["w_cls"]) & ~same["per_fold_selection"]]
        return [str(n) for n in same.sort_values("alpha", kind="stable").index]

    @functools.cached_property
    def augmentation_variant(self) -> str | None:
        """The row that differs from the reference only in ``augment`` (None when absent)."""
        ref, t = self.row(self.reference), self._of_start()
        aug = t[(t["method"] == ref["method"]) & (t["model"] == ref["model"])]
        aug = aug[(aug["augment"] != ref["augment"]) & (aug["alpha"] == ref["alpha"])]
        aug = aug[aug["w_cls"] == ref["w_cls"]]
        return str(aug.index[0]) if len(aug) else None

    @functools.cached_property
    def variants(self) -> set[str]:
        """Rows reported beside their study row, not in the main table: the reference's other
        alphas and augmentation, the other start's rows."""
        out = {a for a in self.alpha_variants if a != self.reference}
        out |= {n for n in self.composite if self.is_choice(str(self.row(n)["group"]))}
        out |= {self.augmentation_variant} if self.augmentation_variant else set()
        return out | {v for _, v in self.init_pairs}

    # ---- groups and roles ---------------------------------------------------------------
    @functools.cached_property
    def groups(self) -> list[str]:
        """The study's groups in table order (split variants' groups are not study groups)."""
        return [str(g) for g in dict.fromkeys(self.table.loc[self.study, "group"])]

    def _group_rows(self, group: str) -> list[str]:
        return [n for n in self.study if self.row(n)["group"] == group]

    @functools.cached_property
    def main_groups(self) -> list[str]:
        """Groups of the main table: all but the variants' (see :attr:`variants`)."""
        return [g for g in self.groups if not set(self._group_rows(g)) <= self.variants]

    @functools.cached_property
    def roles(self) -> dict[str, Any]:
        """``{role: group}`` for every role of :data:`ROLES` (None when no group plays it), and
        ``torchjd``: every torchjd aggregator's group."""
        t = self._of_start()
        size = t.loc[~t["per_fold_selection"], "group"].value_counts()
        firsts = [(str(g), t[t["group"] == g].iloc[0]) for g in dict.fromkeys(t["group"])]
        roles: dict[str, Any] = {
            role: next((g for g, r in firsts if test(r, int(size.get(g, 0)))), None)
            for role, test in ROLES.items()
        }
        roles["torchjd"] = [g for g, r in firsts if METHODS[r["method"]].kind == "aggregation"]
        return roles

    @functools.cached_property
    def same_detector(self) -> dict[str, str]:
        """``{experiment: twin}`` for the isolated controls (``ISOLATED_DETECTORS``) whose
        detector is by design the same as an earlier one's: no classification gradient reaches
        it and every detection setting is equal, so one of them stands for all in detection
        comparisons (a test trains them and checks that the detectors are identical)."""
        t = self._of_start()
        keys = [k for k in SETTINGS if k not in ("model", "w_cls", "method")]
        isolated = [str(n) for n in t.index
                    if t.at[n, "model"] in ISOLATED_DETECTORS and n in self.trained]  # fmt: skip
        twins: dict[str, str] = {}
        for i, name in enumerate(isolated):
            for first in isolated[:i]:
                if first not in twins and all(_same(t.at[name, k], t.at[first, k]) for k in keys):
                    twins[name] = first
                    break
        return twins

    @functools.cached_property
    def decisive(self) -> list[str]:
        """The runs the paper's decisive comparisons read, which get the ``decisive_seeds`` too:
        the isolated detector, the view classifier alone and fixed weights (the cost of sharing)
        and the reference (what it recovers), where the study has them."""
        singles = [self.members(self.roles[r])[0] for r in ("view_only", "fixed") if self.roles[r]]
        return [e for e in dict.fromkeys([self.isolated_detector, *singles, self.reference]) if e]

    @functools.cached_property
    def decisive_grids(self) -> list[str]:
        """Grid groups whose validation choice is a decisive run (the manual grid: the chosen
        manual weight) when the study has ``decisive_seeds``. The choice is made on the seeds
        every member ran; the chosen configuration then trains the decisive seeds too (the
        workflow's checkpoint ``select_group``), so that it is compared on as many seeds as the
        other decisive runs without every grid point paying for them."""
        grid = self.roles["manual"]
        return [grid] if grid and self.decisive_seeds and grid in self.grid_groups else []

    def seeds_of(self, name: str, chosen: Mapping[str, str] | None = None) -> list[int]:
        """The seeds an experiment's results have: ``seeds``, and ``decisive_seeds`` for a
        decisive run; a per-fold composite has its candidates' (those every one ran).

        ``chosen`` (group -> chosen row, from the selections) adds the decisive seeds to the
        choice of a decisive grid (:attr:`decisive_grids`): the chosen row of a held-out grid,
        or its per-fold composite under cv. Without it, the seeds known before any selection."""
        row = self.row(name)
        if bool(row["per_fold_selection"]):
            members = [self.seeds_of(m) for m in self.candidates(name)]
            seeds = [s for s in members[0] if all(s in m for m in members)]
        else:
            extra = list(self.decisive_seeds) if name in self.decisive else []
            seeds = sorted({*self.seeds, *extra})
        group = str(row["group"])
        if chosen and group in self.decisive_grids and chosen.get(group) == name:
            seeds = sorted({*seeds, *self.decisive_seeds})
        return seeds

    @functools.cached_property
    def sharing_runs(self) -> list[str]:
        """The runs the cost of sharing reads (``evaluation.sharing``): the isolated detector,
        the view classifier alone, fixed weights and every other shared-trunk study run; empty
        when the study lacks one of the first three (flag ``sharing``)."""
        if not self.flags["sharing"]:
            return []
        singles = [self.isolated_detector, *(self.members(self.roles[r])[0]
                                             for r in ("view_only", "fixed"))]  # fmt: skip
        return list(dict.fromkeys([*singles, *self.shared_trunk]))

    @functools.cached_property
    def interference_runs(self) -> list[str]:
        """The runs whose accumulated-gradient interference is measured (``evaluation.
        interference``): fixed weights, the reference's method and the manual grid's rows, where
        they share a trunk. Not every shared-trunk run: each costs a job of its own."""
        t = self._of_start()
        keep = [self.members(self.roles["fixed"])[0]] if self.roles["fixed"] else []
        keep.append(self.reference)
        return [e for e in dict.fromkeys(keep) if e in self.multitask and e in t.index]

    @functools.cached_property
    def isolated_detector(self) -> str | None:
        """The one isolated-detector reference of the detection comparisons: the first trained
        study row whose detector no classification gradient reaches (table order)."""
        t = self._of_start()
        rows = [str(n) for n in t.index
                if t.at[n, "model"] in ISOLATED_DETECTORS and n in self.trained]  # fmt: skip
        return rows[0] if rows else None

    @functools.cached_property
    def front_runs(self) -> list[str]:
        """The study's trained fixed-weight multi-task rows (the fixed-weight front), by w_cls."""
        t = self._of_start()
        rows = t[(t["model"] == "multitask") & (t["method"] == "fixed")
                 & ~t["per_fold_selection"]]  # fmt: skip
        return sorted(map(str, rows.index),
                      key=lambda n: (float(t.at[n, "w_cls"]), float(t.at[n, "w_det"])))  # fmt: skip

    @functools.cached_property
    def choices(self) -> dict[str, list[str]]:
        """Validation choices among rows of different groups (a grid group's choice is its own):
        name -> the candidate rows. ``front_detection``: the fixed weight best for detection;
        ``gradnorm_alpha``: GradNorm's alpha, chosen with the manual grid's score so that both
        get the same kind of tuning. Under cv each fold chooses on its own validation part and
        the choice's composite row (group: the choice's name) pools the chosen runs."""
        out = {}
        if self.flags["front_detection"]:
            out[FRONT_DETECTION] = list(self.front_runs)
        if self.flags["alpha_choice"]:
            out[GRADNORM_ALPHA] = list(self.alpha_variants)
        return out

    # ---- the plan ------------------------------------------------------------------------
    @functools.cached_property
    def flags(self) -> dict[str, bool]:
        """What the study has (:data:`FLAGS`), from its design alone: known before any run."""
        roles = self.roles
        alphas = {self.row(a)["alpha"] for a in self.alpha_variants}
        flags = {
            "alpha": len({a for a in alphas if not pd.isna(a)}) >= 2,
            "augmentation": self.augmentation_variant is not None,
            "dual_backbone": roles["dual"] is not None,
            "stopgrad": roles["stopgrad"] is not None,
            "det_only": roles["det_only"] is not None,
            "view_only": roles["view_only"] is not None,
            "sharing": all(roles[r] is not None for r in ("view_only", "fixed"))
            and self.isolated_detector is not None,
            "interference": bool(self.interference_runs),
            "fixed": roles["fixed"] is not None,
            "manual": roles["manual"] is not None,
            "traditional": roles["fixed"] is not None or roles["manual"] is not None,
            "front": len(self.front_runs) >= 2,
            "front_detection": len(self.front_runs) >= 2,
            "alpha_choice": len(self.alpha_variants) >= 2
            and self.row(self.reference)["method"] == "gradnorm",
            "uncertainty": roles["uncertainty"] is not None,
            "torchjd": bool(roles["torchjd"]),
            "gradnorm": self.row(self.reference)["method"] == "gradnorm",
            "diagnostics": bool(self.multitask),
            "split": bool(self.split_pairs),
            "init": bool(self.init_pairs),
            "comparisons": any(g != self.row(self.reference)["group"] for g in self.main_groups),
            "pretrained": self.start == "pretrained",
            "cv": self.reference in self.cv,
            "multi_seed": len(self.seeds) > 1 or bool(self.decisive_seeds and self.decisive),
        }
        assert set(flags) == set(FLAGS), "every flag is described in FLAGS"
        return flags
