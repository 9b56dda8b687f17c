# Evaluation of the final EMA weights on every evaluation split (valid, test) in one job per run:
# one model load and one process start instead of one per split. A split variant whose scheme
# lacks a split (the original split of an export without test) is evaluated on the splits it has
# by the same rule under another name (evaluate_available).


rule evaluate:
    input:
        weights=f"{run_dir()}/weights.pt",
        caches=lambda w: [
            f"{R}/cache/{split_scheme(w.experiment)}/{split}-{IMGSZ}.npz"
            for split in eval_splits(w.experiment)
        ],
    output:
        metrics=[f"{run_dir(FULL_EXPERIMENT)}/metrics_{s}.json" for s in EVAL_SPLITS],
        predictions=[
            f"{run_dir(FULL_EXPERIMENT)}/predictions_{s}.json" for s in EVAL_SPLITS
        ],
    log:
        f"{run_dir()}/evaluate.log",
    benchmark:
        f"{run_dir()}/evaluate.benchmark.tsv"
    priority: 5
    conda:
        "../environment.yml"
    threads: config["train"]["threads"]
    resources:
        **config.get("resources", {}).get("evaluate", {}),
    params:
        splits=lambda w: eval_splits(w.experiment),
        conf_thres=config["evaluation"]["conf_thres"],
        iou_thres=config["evaluation"]["iou_thres"],
        max_det=config["evaluation"]["max_det"],
        batch_size=32,
        device=config["train"]["device"],
    script:
        "../workflow/scripts/evaluate.py"


if PARTIAL_EVAL:

    use rule evaluate as evaluate_available with:
        output:
            metrics=[
                f"{run_dir(PARTIAL_EXPERIMENT)}/metrics_{s}.json"
                for s in PARTIAL_SPLITS
            ],
            predictions=[
                f"{run_dir(PARTIAL_EXPERIMENT)}/predictions_{s}.json"
                for s in PARTIAL_SPLITS
            ],
