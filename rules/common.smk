# Configuration, the experiment table and the helpers shared by the rule files.
import os
from pathlib import Path


import shutil
from functools import cache

from echomtl.config import check_study_config, load_experiments, validate_config
from echomtl.data.export_reader import present_splits
from echomtl.methods import method as balancing_method
from echomtl.report.context import plan_outputs

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
STUDY = [n for n in EXPERIMENTS.index if not EXPERIMENTS.loc[n, "split_variant"]]
_SETTINGS = ["method", "model", "w_det", "w_cls", "alpha", "augment", "scale", "split"]
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
MULTITASK = [n for n in STUDY if EXPERIMENTS.loc[n, "model"] == "multitask"]
PLAN = plan_outputs(EXPERIMENTS, REFERENCE)
# Audits of the study's split scheme(s) and of the export's own splits (leakage as published).
AUDIT_SCHEMES = sorted({"original", *EXPERIMENTS["split"]})
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
    scheme="original|grouped",
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
    """The evaluation splits an experiment's run is evaluated on."""
    return [s for s in EVAL_SPLITS if s in scheme_splits(split_scheme(name))]


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
FULL_EVAL = [n for n in EXPERIMENTS.index if eval_splits(n) == EVAL_SPLITS]
PARTIAL_EVAL = [n for n in EXPERIMENTS.index if eval_splits(n) != EVAL_SPLITS]


def experiment_wildcard(names):
    """``{experiment,<regex>}``: the wildcard constrained to exactly these experiment names."""
    pattern = "|".join(n.replace(".", r"\.") for n in names) or "(?!)"
    return f"{{experiment,{pattern}}}"


FULL_EXPERIMENT = experiment_wildcard(FULL_EVAL)
PARTIAL_EXPERIMENT = experiment_wildcard(PARTIAL_EVAL)
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
    return f"{RUNS}/{experiment}/seed{seed}"


def all_runs(pattern):
    return [
        pattern.format(run=run_dir(name, seed))
        for name in EXPERIMENTS.index
        for seed in SEEDS
    ]


def all_metrics():
    """Every metrics file the runs write (a split variant may lack test)."""
    return [
        f"{run_dir(name, seed)}/metrics_{split}.json"
        for name in EXPERIMENTS.index
        for seed in SEEDS
        for split in eval_splits(name)
    ]


def seed_files(name, filename):
    return [f"{run_dir(name, seed)}/{filename}" for seed in SEEDS]


def run_files(names, filename):
    return [f for name in names for f in seed_files(name, filename)]


def multi_row_groups():
    counts = EXPERIMENTS["group"].value_counts()
    return sorted(g for g, n in counts.items() if n > 1)


def report_inputs(wildcards):
    """What a table, figure or the paper reads: the tidy table, selections and statistics."""
    return {
        "tidy": f"{PAPER}/tidy.csv",
        "selections": [f"{PAPER}/selection/{g}.json" for g in multi_row_groups()],
        "intervals": [f"{PAPER}/stats/bootstrap/{n}.json" for n in STUDY],
        "paired": [f"{PAPER}/stats/paired/{n}.json" for n in STUDY if n != REFERENCE],
        "audits": [f"{DATA}/audit/{scheme}/audit.json" for scheme in AUDIT_SCHEMES],
    }


def figure_inputs(wildcards):
    """Run files a figure draws from, by figure name."""
    name = wildcards.name
    gradnorm = [n for n in STUDY if EXPERIMENTS.loc[n, "method"] == "gradnorm"]
    if name == "training_curves":
        return {"epochs": run_files(STUDY, "epochs.csv")}
    if name == "gradnorm_weights":
        return {"steps": run_files(gradnorm, "steps.csv")}
    if name == "gradient_diagnostics":
        return {"diagnostics": run_files(MULTITASK, "diagnostics.csv")}
    if name == "confusion_matrix":
        return {"metrics": seed_files(REFERENCE, "metrics_test.json")}
    if name == "detection_examples":
        scheme = split_scheme(REFERENCE)
        return {
            "predictions": f"{run_dir(REFERENCE, SEEDS[0])}/predictions_test.json",
            "metrics": [f"{run_dir(REFERENCE, SEEDS[0])}/metrics_test.json"],
            "records": f"{DATA}/splits/{scheme}.csv",
        }
    return {}


def all_outputs():
    """The paper's PDF when TeX is installed, else its LaTeX source (and a hint in onstart)."""
    if LATEXMK:
        return [f"{PAPER}/main.pdf"]
    return [f"{PAPER}/main.tex"]
