# Evaluation of the final EMA weights on every evaluation split (valid, test) in one job per run:
# one model load and one process start instead of one per split.


rule evaluate:
    input:
        weights=f"{run_dir()}/weights.pt",
        caches=lambda w: [
            f"{R}/cache/{split_scheme(w.experiment)}/{split}-{IMGSZ}.npz"
            for split in EVAL_SPLITS
        ],
    output:
        metrics=expand(
            f"{run_dir()}/metrics_{{split}}.json",
            split=EVAL_SPLITS,
            allow_missing=True,
        ),
        predictions=expand(
            f"{run_dir()}/predictions_{{split}}.json",
            split=EVAL_SPLITS,
            allow_missing=True,
        ),
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
        splits=EVAL_SPLITS,
        conf_thres=config["evaluation"]["conf_thres"],
        iou_thres=config["evaluation"]["iou_thres"],
        max_det=config["evaluation"]["max_det"],
        batch_size=32,
        device=config["train"]["device"],
    script:
        "../workflow/scripts/evaluate.py"
