# Configuration, the experiment table and the helpers shared by the rule files.
import os
from pathlib import Path


import shutil
from functools import cache

from echomtl.config import (
    SETTINGS,
    check_study_config,
    load_experiments,
    resolve_inits,
    validate_config,
    weights_path,
)
from echomtl.data.export_reader import present_splits
from echomtl.data.splits import CV_PARTITION
from echomtl.methods import method as balancing_method
from echomtl.report.outputs import FIGURES, TABLES, Layout, output, planned

validate_config(config, source="config (config/config.yaml and --configfile/--config)")

R = config["results_dir"]
DATA = f"{R}/data"
RUNS = f"{R}/runs"
EXPERIMENTS = load_experiments(config["experiments"])
DEFAULT_SCHEME = config["data"]["split_scheme"]
# The split axis: a row whose split differs from data.split_scheme is a split variant of the row
# that is identical but for the split. Variants are evaluated on their own splits and reported in
# their own table (their evaluation images differ, so no paired comparison with the others).
EXPERIMENTS["split"] = (
    EXPERIMENTS["split"].fillna(DEFAULT_SCHEME).replace("", DEFAULT_SCHEME)
)
EXPERIMENTS["split_variant"] = EXPERIMENTS["split"] != DEFAULT_SCHEME
# The start of every network: random weights or the checkpoint of model.weights (read here, at
# parse time, so that a missing, foreign or wrong-scale file stops the workflow before any job).
WEIGHTS = weights_path(config)
EXPERIMENTS["init"] = resolve_inits(EXPERIMENTS, WEIGHTS, config["experiments"])
WEIGHTS_SHA256 = None
CHECKPOINT = None  # the file's provenance, for the paper
if WEIGHTS is not None and (EXPERIMENTS["init"] == "pretrained").any():
    from echomtl.models.pretrained import CheckpointError, read_checkpoint

    try:
        CHECKPOINT = read_checkpoint(WEIGHTS, config["model"]["scale"]).provenance()
        WEIGHTS_SHA256 = CHECKPOINT["sha256"]
    except CheckpointError as _error:
        raise ValueError(f"config model.weights: {_error}") from None
    _pretrained = EXPERIMENTS[EXPERIMENTS["init"] == "pretrained"]
    _scales = set(_pretrained["scale"].dropna()) - {config["model"]["scale"]}
    if _scales:
        raise ValueError(
            f"{config['experiments']}: rows with scale {', '.join(sorted(_scales))} cannot start "
            f"from model.weights {WEIGHTS}, a yolov5{config['model']['scale']} checkpoint"
        )
STUDY = [n for n in EXPERIMENTS.index if not EXPERIMENTS.loc[n, "split_variant"]]
_SETTINGS = list(SETTINGS)
_same = EXPERIMENTS[EXPERIMENTS.astype(str).duplicated(_SETTINGS, keep=False)]
if len(_same):
    raise ValueError(
        f"{config['experiments']}: experiments {', '.join(_same.index)} have the same settings "
        f"({', '.join(_SETTINGS)}; an empty split means data.split_scheme {DEFAULT_SCHEME!r}): "
        "one run would be reported twice"
    )
SEEDS = config["seeds"]
IMGSZ = config["model"]["imgsz"]
PAPER = f"{R}/paper"
REFERENCE = config["report"]["reference_method"]
if REFERENCE not in EXPERIMENTS.index:
    raise ValueError(
        f"config report.reference_method: {REFERENCE!r} is not an experiment of "
        f"{config['experiments']} (known: {', '.join(EXPERIMENTS.index)})"
    )
if EXPERIMENTS.loc[REFERENCE, "split_variant"]:
    raise ValueError(
        f"config report.reference_method: {REFERENCE!r} uses split "
        f"{EXPERIMENTS.loc[REFERENCE, 'split']!r}, not the study's data.split_scheme "
        f"{DEFAULT_SCHEME!r}"
    )
CV_FOLDS = config["data"]["cv_folds"]
CV_FOLD_PATTERN = CV_PARTITION.format(fold=r"\d+")
# Cross-validated experiments train one run per outer fold and are evaluated on the pooled
# out-of-fold predictions; the others (holdout schemes) train and evaluate one run.
CV = [n for n in EXPERIMENTS.index if EXPERIMENTS.loc[n, "split"] == "cv"]
HOLDOUT = [n for n in EXPERIMENTS.index if n not in CV]
# Under cv a multi-row group (the manual grid) is selected per fold on that fold's validation
# part: its pooled predictions are a composite experiment, one row added to the table, that is
# never trained (each fold's test images are predicted by that fold's chosen configuration).
TRAINED = list(EXPERIMENTS.index)
EXPERIMENTS["per_fold_selection"] = False
for _group, _n in EXPERIMENTS.loc[STUDY, "group"].value_counts().items():
    _members = [m for m in STUDY if EXPERIMENTS.loc[m, "group"] == _group]
    if _n > 1 and all(m in CV for m in _members):
        _name = f"{_group}_per_fold"
        if _name in EXPERIMENTS.index:
            raise ValueError(
                f"{config['experiments']}: experiment name {_name!r} is reserved for the "
                f"per-fold selection of group {_group!r}"
            )
        _row = EXPERIMENTS.loc[_members[0]].copy()
        _mixed = [
            c
            for c in ("method", "model", "augment", "init")
            if EXPERIMENTS.loc[_members, c].astype(str).nunique() > 1
        ]
        if _mixed:  # the composite row must describe every fold's choice truthfully
            raise ValueError(
                f"{config['experiments']}: group {_group!r} is selected per fold under cv, so "
                f"its rows may differ only in w_det, w_cls or alpha; they differ in "
                f"{', '.join(_mixed)}"
            )
        for _col in ("w_det", "w_cls", "alpha"):
            if EXPERIMENTS.loc[_members, _col].astype(str).nunique() > 1:
                _row[_col] = None
        _row["experiment"] = _name
        _row["description"] = f"{_group}: configuration chosen per fold on validation"
        _row["per_fold_selection"] = True
        EXPERIMENTS.loc[_name] = _row
        STUDY.append(_name)
        CV.append(_name)
COMPOSITE = [n for n in EXPERIMENTS.index if EXPERIMENTS.loc[n, "per_fold_selection"]]
MULTITASK = [
    n for n in STUDY if n in TRAINED and EXPERIMENTS.loc[n, "model"] == "multitask"
]
PLANNED = planned(EXPERIMENTS, REFERENCE)
PLAN = {
    kind: [o.name for o in PLANNED if o.kind == kind[:-1]]
    for kind in ("tables", "figures")
}
LATEXMK = shutil.which("latexmk")
EVAL_SPLITS = list(config["evaluation"]["splits"])
for _needed in ("valid", "test"):
    if _needed not in EVAL_SPLITS:
        raise ValueError(
            f"config evaluation.splits must include {_needed!r} (manual-grid selection reads "
            f"validation metrics, the paper reports test metrics); got {EVAL_SPLITS}"
        )


wildcard_constraints:
    experiment="|".join(EXPERIMENTS.index.map(lambda n: n.replace(".", r"\."))),
    seed=r"\d+",
    split="train|valid|test",
    scheme=f"original|grouped|{CV_FOLD_PATTERN}",
    fold=r"\d+",
    imgsz=r"\d+",


def export_dir():
    """The raw Roboflow export: generated (synthetic) or given (real)."""
    if config["data"]["source"] == "synthetic":
        return f"{R}/raw/synthetic"
    path = config["data"].get("export_dir") or os.environ.get("REGURG_DATA")
    if not path:
        raise ValueError(
            "config data.source is 'export' but neither data.export_dir nor $REGURG_DATA is set"
        )
    if not Path(path).is_dir():
        raise ValueError(f"config data.export_dir: {path} is not a directory")
    return path


def experiment(name):
    return EXPERIMENTS.loc[name]


def split_scheme(name):
    return experiment(name)["split"]


@cache
def scheme_splits(scheme):
    """Splits a scheme has: all three, except an export's own (original) splits, which may
    lack one (the development copy of the real export has no test split)."""
    if scheme == "original" and config["data"]["source"] == "export":
        return present_splits(export_dir())
    return ["train", "valid", "test"]


def eval_splits(name):
    """The evaluation splits a run is evaluated on (under cv: each fold's run)."""
    return [s for s in EVAL_SPLITS if s in scheme_splits(split_scheme(name))]


def partition(name, fold=None):
    """Splits file and cache folder of a run: the scheme, or ``cv-fold<f>`` under cv."""
    if name in CV:
        return CV_PARTITION.format(fold=fold)
    return split_scheme(name)


def partitions(name):
    """Every partition an experiment trains on (one per outer fold under cv)."""
    if name in CV:
        return [partition(name, f) for f in range(CV_FOLDS)]
    return [split_scheme(name)]


# Audits of the study's partitions (each cv fold's too) and of the export's own splits
# (leakage as published).
AUDIT_SCHEMES = sorted(
    {"original", *(p for n in TRAINED for p in partitions(n))},
    key=lambda p: (p.startswith("cv-"), len(p), p),
)


def model_scale(name):
    return experiment(name)["scale"] or config["model"]["scale"]


def train_params(wildcards):
    """Every hyper-parameter of a run: a change re-runs exactly the jobs it affects."""
    row = experiment(wildcards.experiment)
    alpha = row["alpha"]
    return {
        "experiment": wildcards.experiment,
        "seed": int(wildcards.seed),
        "model": row["model"],
        "scale": model_scale(wildcards.experiment),
        "class_names": list(config["data"]["class_names"]),
        "view_names": list(config["data"]["view_names"]),
        "imgsz": IMGSZ,
        "epochs": config["train"]["epochs"],
        "batch_size": config["train"]["batch_size"],
        "nominal_batch": config["train"]["nominal_batch"],
        "method": row["method"],
        "w_det": float(row["w_det"]),
        "w_cls": float(row["w_cls"]),
        "alpha": None if alpha is None or alpha != alpha else float(alpha),
        "augment": bool(row["augment"]),
        "hyp": dict(config["train"]["hyp"]),
        "attach_layer": config["model"]["attach_layer"],
        "cls_dropout": config["model"]["cls_dropout"],
        "cos_lr": config["train"]["cos_lr"],
        "grad_clip": config["train"]["grad_clip"],
        "ema": config["train"]["ema"],
        "gradnorm": dict(config["balancing"].get("gradnorm", {})),
        "diagnostics_every": config["balancing"]["diagnostics_every"],
        "amp": config["train"]["amp"],
        "warmup_min_iterations": config["train"]["warmup_min_iterations"],
        "init": row["init"],
        "weights_sha256": WEIGHTS_SHA256 if row["init"] == "pretrained" else None,
    }


for _name in EXPERIMENTS.index:
    _missing = [s for s in ("valid", "test") if s not in eval_splits(_name)]
    # a split variant may lack the test split (reported on valid); the study's runs may not
    if "valid" in _missing or (_missing and _name in STUDY):
        raise ValueError(
            f"experiment {_name!r}: split scheme {split_scheme(_name)!r} of {export_dir()} has "
            f"no {' or '.join(_missing)} split (found: {', '.join(scheme_splits(split_scheme(_name)))}); "
            "use the 'grouped' scheme (config data.split_scheme or the experiment's split column)"
        )
check_study_config(
    config,
    set(EXPERIMENTS["split"]),
    Path(export_dir()) if config["data"]["source"] == "export" else None,
)
FULL_EVAL = [n for n in HOLDOUT if eval_splits(n) == EVAL_SPLITS]
PARTIAL_EVAL = [n for n in HOLDOUT if eval_splits(n) != EVAL_SPLITS]


def experiment_wildcard(names):
    """``{experiment,<regex>}``: the wildcard constrained to exactly these experiment names."""
    pattern = "|".join(n.replace(".", r"\.") for n in names) or "(?!)"
    return f"{{experiment,{pattern}}}"


FULL_EXPERIMENT = experiment_wildcard(FULL_EVAL)
PARTIAL_EXPERIMENT = experiment_wildcard(PARTIAL_EVAL)
HOLDOUT_EXPERIMENT = experiment_wildcard(HOLDOUT)
CV_TRAINED_EXPERIMENT = experiment_wildcard([n for n in CV if n in TRAINED])
COMPOSITE_EXPERIMENT = experiment_wildcard(COMPOSITE)
# runs of a scheme without a test split are evaluated on the other evaluation splits
PARTIAL_SPLITS = [s for s in EVAL_SPLITS if s != "test"]


def train_priority(wildcards):
    """Longest jobs first (the method's step cost of echomtl.methods, x1.5 for two backbones or
    augmentation), so that two cores do not end the study with one long job running alone.
    """
    row = experiment(wildcards.experiment)
    cost = balancing_method(row["method"]).cost
    if row["model"] == "dual_backbone" or row["augment"]:
        cost *= 1.5
    return round(10 * cost)


def run_dir(experiment="{experiment}", seed="{seed}"):
    """An experiment's evaluation folder per seed: its holdout run, or under cv the pooled
    out-of-fold evaluation (the fold runs are its subfolders)."""
    return f"{RUNS}/{experiment}/seed{seed}"


def fold_dir(experiment="{experiment}", seed="{seed}", fold="{fold}"):
    """The run of one outer fold of a cross-validated experiment."""
    return f"{run_dir(experiment, seed)}/fold{fold}"


def record_dir(name, seed):
    """The run whose training record (steps, epochs, diagnostics, timing) the report reads:
    the holdout run, or under cv the run of the first fold (every fold's record is kept).
    """
    return fold_dir(name, seed, 0) if name in CV else run_dir(name, seed)


def all_runs(pattern):
    """Training records of every trained experiment and seed (see record_dir)."""
    return [
        pattern.format(run=record_dir(name, seed)) for name in TRAINED for seed in SEEDS
    ]


def evaluated_splits(name):
    """Splits of an experiment's evaluation folder (under cv only the pooled test split:
    the folds' validation parts overlap and are read per fold, for selection)."""
    return ["test"] if name in CV else eval_splits(name)


def all_metrics():
    """Every evaluation-level metrics file (a split variant may lack test)."""
    return [
        f"{run_dir(name, seed)}/metrics_{split}.json"
        for name in EXPERIMENTS.index
        for seed in SEEDS
        for split in evaluated_splits(name)
    ]


def seed_files(name, filename):
    """A file of an experiment's evaluation folder, per seed."""
    return [f"{run_dir(name, seed)}/{filename}" for seed in SEEDS]


def fold_files(name, filename):
    """A file of every fold run of a cross-validated experiment, per seed and fold."""
    return [
        f"{fold_dir(name, seed, fold)}/{filename}"
        for seed in SEEDS
        for fold in range(CV_FOLDS)
    ]


def run_files(names, filename):
    """A training-record file (see record_dir) of the experiments, per seed."""
    return [f"{record_dir(name, seed)}/{filename}" for name in names for seed in SEEDS]


def selection_inputs(wildcards):
    """Validation metrics a group's selection reads: per fold under cv."""
    members = [n for n in TRAINED if EXPERIMENTS.loc[n, "group"] == wildcards.group]
    if all(n in CV for n in members):
        return [f for n in members for f in fold_files(n, "metrics_valid.json")]
    return [f for n in members for f in seed_files(n, "metrics_valid.json")]


def multi_row_groups():
    counts = EXPERIMENTS.loc[TRAINED, "group"].value_counts()
    return sorted(g for g, n in counts.items() if n > 1)


# Where the report stage's inputs are: each table and figure of echomtl.report.outputs takes
# its exact inputs from it (a figure of the reference's predictions runs only the reference).
_TRAINED_STUDY = [n for n in STUDY if n in TRAINED]
LAYOUT = Layout(
    paper=PAPER,
    reference=REFERENCE,
    trained=_TRAINED_STUDY,
    study=STUDY,
    multitask=MULTITASK,
    gradnorm=[n for n in _TRAINED_STUDY if EXPERIMENTS.loc[n, "method"] == "gradnorm"],
    groups=multi_row_groups(),
    audits=[f"{DATA}/audit/{scheme}/audit.json" for scheme in AUDIT_SCHEMES],
    claims=str(PAPER_SOURCES / "claims.yaml"),
    first_run=run_dir(REFERENCE, SEEDS[0]),
    # under cv every image is a test image of one fold
    records=(
        f"{DATA}/records.csv"
        if REFERENCE in CV
        else f"{DATA}/splits/{split_scheme(REFERENCE)}.csv"
    ),
    run_files=run_files,
    seed_files=seed_files,
)


def output_inputs(kind):
    """The input function of the table (kind "table") or figure rule: the entry's own files."""
    return lambda wildcards: output(kind, wildcards.name).inputs(LAYOUT)


def paper_inputs(wildcards):
    """What the paper's text reads besides the tables and figures."""
    return {**LAYOUT.results(), **LAYOUT.audit_files()}


def all_outputs():
    """The paper's PDF when TeX is installed, else its LaTeX source (and a hint in onstart)."""
    if LATEXMK:
        return [f"{PAPER}/main.pdf"]
    return [f"{PAPER}/main.tex"]
