# Configuration, the experiment table and the helpers shared by the rule files.
import os
from pathlib import Path


from echomtl.config import load_experiments, validate_config

validate_config(config, source="config (config/config.yaml and --configfile/--config)")

R = config["results_dir"]
DATA = f"{R}/data"
RUNS = f"{R}/runs"
EXPERIMENTS = load_experiments(Path(config["experiments"]))
SEEDS = config["seeds"]
IMGSZ = config["model"]["imgsz"]


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
    return experiment(name)["split"] or config["data"]["split_scheme"]


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


def run_dir(experiment="{experiment}", seed="{seed}"):
    return f"{RUNS}/{experiment}/seed{seed}"


def all_runs(pattern):
    return [
        pattern.format(run=run_dir(name, seed))
        for name in EXPERIMENTS.index
        for seed in SEEDS
    ]


def all_outputs():
    schemes = sorted({split_scheme(name) for name in EXPERIMENTS.index})
    targets = [f"{DATA}/audit/{scheme}/audit.json" for scheme in schemes]
    for split in config["evaluation"]["splits"]:
        targets += all_runs(f"{{run}}/metrics_{split}.json")
    return targets
