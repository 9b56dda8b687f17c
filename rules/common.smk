# Configuration, the experiment table and the helpers shared by the rule files.
import os
from pathlib import Path


import shutil
from functools import cache

from echomtl.config import (
    check_study_config,
    load_experiments,
    validate_config,
    weights_path,
)
from echomtl.data.export_reader import export_fingerprint, present_splits
from echomtl.data.splits import CV_PARTITION
from echomtl.methods import method as balancing_method
from echomtl.report.outputs import FIGURES, TABLES, Layout, output, planned
from echomtl.report.provenance import environment_pins, git_state
from echomtl.atomic import read_json
from echomtl.study import Study, resolve_inits, train_parameters

validate_config(config, source="config (config/config.yaml and --configfile/--config)")

R = config["results_dir"]
DATA = f"{R}/data"
RUNS = f"{R}/runs"
_TABLE = load_experiments(config["experiments"])
# The start of every network: random weights or the checkpoint of model.weights (read here, at
# parse time, so that a missing, foreign or wrong-scale file stops the workflow before any job).
WEIGHTS = weights_path(config)
_TABLE["init"] = resolve_inits(_TABLE, WEIGHTS is not None, config["experiments"])
# The study, planned once (echomtl.study): its rows, their roles and the outputs it has.
STUDY_MODEL = Study.plan(
    _TABLE,
    reference=config["report"]["reference_method"],
    split_scheme=config["data"]["split_scheme"],
    seeds=config["seeds"],
    cv_folds=config["data"]["cv_folds"],
    source=str(config["experiments"]),
    decisive_seeds=config["decisive_seeds"],
)
EXPERIMENTS = STUDY_MODEL.table
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
# the commit and the tree's state, for the provenance record (echomtl.report.provenance)
GIT_STATE = git_state(workflow.basedir)
# where the study's results came from when they were unpacked from an archive (echomtl.archive)
ORIGIN = Path(R) / "unpacked-from.json"
RESULTS_ORIGIN = read_json(ORIGIN) if ORIGIN.is_file() else None
# the packages the environment pins, whose installed versions the record names
PINS = environment_pins(Path(workflow.basedir) / "environment.yml")
SEEDS = config["seeds"]  # every run's; the decisive runs add config decisive_seeds
DECISIVE_GRIDS = STUDY_MODEL.decisive_grids


def decisive_selection(group):
    """The validation choice of a decisive grid (Study.decisive_grids), once the checkpoint
    select_group has made it: only an input function may ask (Snakemake re-evaluates the DAG
    after the checkpoint)."""
    return read_json(checkpoints.select_group.get(group=group).output[0])


def seeds_of(name):
    """The seeds of an experiment's results (Study.seeds_of): a decisive grid's choice adds the
    decisive seeds, known after its selection; every other row's are known at parse time.
    """
    group = EXPERIMENTS.loc[name, "group"]
    if group not in DECISIVE_GRIDS:
        return STUDY_MODEL.seeds_of(name)
    chosen = decisive_selection(group)["chosen"]
    return STUDY_MODEL.seeds_of(name, chosen={group: chosen})


IMGSZ = config["model"]["imgsz"]
PAPER = f"{R}/paper"
STUDY_JSON = f"{R}/study.json"
TIDY = f"{R}/tidy.csv"
REFERENCE = STUDY_MODEL.reference
CV_FOLDS = config["data"]["cv_folds"]
CV_FOLD_PATTERN = CV_PARTITION.format(fold=r"\d+")
# Cross-validated experiments train one run per outer fold and are evaluated on the pooled
# out-of-fold predictions; the others (holdout schemes) train and evaluate one run. Under cv a
# grid group is selected per fold: its composite row is never trained (echomtl.study).
STUDY = STUDY_MODEL.study
CV = STUDY_MODEL.cv
HOLDOUT = STUDY_MODEL.holdout
TRAINED = STUDY_MODEL.trained
COMPOSITE = STUDY_MODEL.composite
MULTITASK = STUDY_MODEL.multitask
SHARING_RUNS = STUDY_MODEL.sharing_runs
INTERFERENCE_RUNS = STUDY_MODEL.interference_runs
PLANNED = planned(STUDY_MODEL)
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


SYNTHETIC = config["data"]["source"] == "synthetic"


def export_dir():
    """The raw Roboflow export: generated (synthetic) or given (real)."""
    if SYNTHETIC:
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


def matched_cache(wildcards):
    """A split variant's study run's training cache: the variant trains as many steps as that
    run (training.trainer.run_length); empty for every other run."""
    study_run = dict((v, s) for s, v in STUDY_MODEL.split_pairs).get(
        wildcards.experiment
    )
    if study_run is None:
        return []
    return [f"{R}/cache/{partitions(study_run)[0]}/train-{IMGSZ}.npz"]


def train_params(wildcards):
    """Every hyper-parameter of a run (echomtl.study.train_parameters): a change re-runs
    exactly the jobs it affects."""
    row = experiment(wildcards.experiment)
    return train_parameters(config, row, int(wildcards.seed), WEIGHTS_SHA256)


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
    """Training records of every trained experiment and seed (see record_dir): the seeds
    known at parse time (run_files)."""
    return [
        pattern.format(run=record_dir(name, seed))
        for name in TRAINED
        for seed in STUDY_MODEL.seeds_of(name)
    ]


def evaluated_splits(name):
    """Splits of an experiment's evaluation folder (under cv only the pooled test split:
    the folds' validation parts overlap and are read per fold, for selection)."""
    return ["test"] if name in CV else eval_splits(name)


def in_decisive_grid(name):
    """Whether an experiment's seeds wait on its grid's selection (seeds_of)."""
    return EXPERIMENTS.loc[name, "group"] in DECISIVE_GRIDS


def later_seeds(name):
    """The seeds an experiment gets once its grid's selection has chosen it (seeds_of less the
    seeds known at parse time): none for a row outside the decisive grids."""
    if not in_decisive_grid(name):
        return []
    known = set(STUDY_MODEL.seeds_of(name))
    return [s for s in seeds_of(name) if s not in known]


def training_files(name, later=False):
    """A file ``name`` of every training job (each fold's run under cv; its benchmark file, its
    ``epochs.csv``): of the seeds known at parse time, or (later) of the trainings a decisive
    grid's choice adds (a holdout study's chosen point on the decisive seeds; under cv, each
    fold's chosen run on them)."""
    if not later:
        return [
            (
                f"{fold_dir(e, seed, fold)}/{name}"
                if e in CV
                else f"{run_dir(e, seed)}/{name}"
            )
            for e in TRAINED
            for seed in STUDY_MODEL.seeds_of(e)
            for fold in (range(CV_FOLDS) if e in CV else [None])
        ]
    added = [
        f"{run_dir(e, s)}/{name}"
        for e in TRAINED
        if e not in CV
        for s in later_seeds(e)
    ]
    return added + [
        path
        for e in COMPOSITE
        if in_decisive_grid(e)
        for s in later_seeds(e)
        for path in composite_files(e, s, name)
    ]


def all_metrics(later=False):
    """Every evaluation-level metrics file (a split variant may lack test): on the seeds known
    at parse time, or (later) on the seeds a decisive grid's choice adds after its selection.
    Two inputs, so that a dry run lists the first before the selection."""
    return [
        f"{run_dir(name, seed)}/metrics_{split}.json"
        for name in EXPERIMENTS.index
        for seed in (later_seeds(name) if later else STUDY_MODEL.seeds_of(name))
        for split in evaluated_splits(name)
    ]


def pooled_predictions(names, later=False):
    """The pooled test predictions of experiments, on the seeds known at parse time or (later)
    on the seeds their grid's choice adds (all_metrics)."""
    return [
        f"{run_dir(name, seed)}/predictions_test.json"
        for name in names
        for seed in (later_seeds(name) if later else STUDY_MODEL.seeds_of(name))
    ]


def seed_files(name, filename):
    """A file of an experiment's evaluation folder, per seed."""
    return [f"{run_dir(name, seed)}/{filename}" for seed in seeds_of(name)]


def run_files(names, filename):
    """A training-record file (see record_dir) of the experiments, per seed known at parse time:
    the records (steps, epochs, per-step diagnostics) describe training, and a decisive grid's
    chosen weight is described on the seeds every grid point ran, so that no figure of them
    waits on the selection (its dry run lists its inputs). Its test metrics have every seed.
    """
    return [
        f"{record_dir(name, seed)}/{filename}"
        for name in names
        for seed in STUDY_MODEL.seeds_of(name)
    ]


def selection_file(group):
    """A grid group's validation choice (the evaluation stage's select_group)."""
    return f"{R}/selection/{group}.json"


def choice_file(name):
    """A validation choice among rows of different groups (select_choice; Study.choices)."""
    return f"{R}/selection/choices/{name}.json"


def validation_files(candidates):
    """Validation metrics a selection among the candidates reads: per fold under cv. The seeds
    are those known before any selection (a decisive grid's extra seeds come after its choice).
    """
    seeds = {n: STUDY_MODEL.seeds_of(n) for n in candidates}
    if all(n in CV for n in candidates):
        return [
            f"{fold_dir(n, s, fold)}/metrics_valid.json"
            for n in candidates
            for s in seeds[n]
            for fold in range(CV_FOLDS)
        ]
    return [f"{run_dir(n, s)}/metrics_valid.json" for n in candidates for s in seeds[n]]


def composite_files(composite, seed, filename):
    """The fold runs a per-fold composite pools for one seed: every candidate's on a seed they
    all ran; on a decisive seed of a decisive grid's choice, each fold's chosen run only.
    """
    seed = int(seed)
    candidates = STUDY_MODEL.candidates(composite)
    if seed in STUDY_MODEL.seeds_of(composite):
        return [
            f"{fold_dir(n, seed, f)}/{filename}"
            for n in candidates
            for f in range(CV_FOLDS)
        ]
    per_fold = decisive_selection(EXPERIMENTS.loc[composite, "group"])["per_fold"]
    return [f"{fold_dir(e['chosen'], seed, e['fold'])}/{filename}" for e in per_fold]


def selection_inputs(wildcards):
    """Validation metrics a grid group's selection reads."""
    return validation_files(STUDY_MODEL.members(wildcards.group))


def composite_selection(composite):
    """The selection file a per-fold composite pools by: its grid group's, or its choice's."""
    group = EXPERIMENTS.loc[composite, "group"]
    return choice_file(group) if STUDY_MODEL.is_choice(group) else selection_file(group)


# Where the report stage's inputs are: each table and figure of echomtl.report.outputs takes
# its exact inputs from it (a figure of the reference's predictions runs only the reference).
LAYOUT = Layout(
    paper=PAPER,
    tidy=TIDY,
    stats=f"{R}/stats",
    study_json=STUDY_JSON,
    reference=REFERENCE,
    trained=STUDY_MODEL.trained_study,
    study=STUDY,
    multitask=MULTITASK,
    gradnorm=STUDY_MODEL.gradnorm,
    selections=[selection_file(g) for g in STUDY_MODEL.grid_groups],
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
    sharing=STUDY_MODEL.flags["sharing"],
    interference=INTERFERENCE_RUNS,
    choices=[choice_file(name) for name in STUDY_MODEL.choices],
)


def output_inputs(kind):
    """The input function of the table (kind "table") or figure rule: the entry's own files."""
    return lambda wildcards: {
        "study": STUDY_JSON,
        **output(kind, wildcards.name).inputs(LAYOUT),
    }


def paper_inputs(wildcards):
    """What the paper's text reads besides the tables and figures."""
    return {**LAYOUT.results(), **LAYOUT.audit_files(), **LAYOUT.interference_files()}


def all_outputs():
    """The paper's PDF and its arXiv source when TeX is installed, else its LaTeX source (and
    a hint in onstart)."""
    if LATEXMK:
        return [f"{PAPER}/main.pdf", f"{PAPER}/arxiv.tar.gz"]
    return [f"{PAPER}/main.tex"]
