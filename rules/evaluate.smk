# Evaluation of the final EMA weights on the validation and test splits.


rule evaluate:
    input:
        weights=f"{run_dir()}/weights.pt",
        cache=lambda w: f"{R}/cache/{split_scheme(w.experiment)}/{w.split}-{IMGSZ}.npz",
    output:
        metrics=f"{run_dir()}/metrics_{{split}}.json",
        predictions=f"{run_dir()}/predictions_{{split}}.json",
    log:
        f"{run_dir()}/evaluate_{{split}}.log",
    benchmark:
        f"{run_dir()}/evaluate_{{split}}.benchmark.tsv"
    conda:
        "../environment.yml"
    threads: config["train"]["threads"]
    resources:
        **config.get("resources", {}).get("evaluate", {}),
    params:
        conf_thres=config["evaluation"]["conf_thres"],
        iou_thres=config["evaluation"]["iou_thres"],
        max_det=config["evaluation"]["max_det"],
        batch_size=32,
        device=config["train"]["device"],
    script:
        "../workflow/scripts/evaluate.py"
