# Evaluation of the final EMA weights on every evaluation split (valid, test) in one job per run:
# one model load and one process start instead of one per split. A split variant whose scheme
# lacks a split (the original split of an export without test) is evaluated on the splits it has
# by the same rule under another name (evaluate_available). Under cross-validation each fold's
# run is evaluated on its fold's validation and test parts (evaluate_fold), and the folds' test
# predictions are pooled (pool_folds): every image predicted once, by the model that never saw
# its patient.


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


use rule evaluate as evaluate_fold with:
    input:
        weights=f"{fold_dir()}/weights.pt",
        caches=lambda w: [
            f"{R}/cache/{partition(w.experiment, w.fold)}/{split}-{IMGSZ}.npz"
            for split in EVAL_SPLITS
        ],
    output:
        metrics=[
            f"{fold_dir(CV_TRAINED_EXPERIMENT)}/metrics_{s}.json" for s in EVAL_SPLITS
        ],
        predictions=[
            f"{fold_dir(CV_TRAINED_EXPERIMENT)}/predictions_{s}.json"
            for s in EVAL_SPLITS
        ],
    log:
        f"{fold_dir()}/evaluate.log",
    benchmark:
        f"{fold_dir()}/evaluate.benchmark.tsv"
    params:
        splits=EVAL_SPLITS,
        conf_thres=config["evaluation"]["conf_thres"],
        iou_thres=config["evaluation"]["iou_thres"],
        max_det=config["evaluation"]["max_det"],
        batch_size=32,
        device=config["train"]["device"],


rule pool_folds:
    input:
        predictions=lambda w: [
            f"{fold_dir(w.experiment, w.seed, f)}/predictions_test.json"
            for f in range(CV_FOLDS)
        ],
        metrics=lambda w: [
            f"{fold_dir(w.experiment, w.seed, f)}/metrics_test.json"
            for f in range(CV_FOLDS)
        ],
        splits=[
            f"{DATA}/splits/{CV_PARTITION.format(fold=f)}.csv" for f in range(CV_FOLDS)
        ],
    output:
        metrics=f"{run_dir(CV_TRAINED_EXPERIMENT)}/metrics_test.json",
        predictions=f"{run_dir(CV_TRAINED_EXPERIMENT)}/predictions_test.json",
    log:
        f"{run_dir()}/pool_folds.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/pool_folds.py"


rule pool_selected:
    input:
        selection=lambda w: f"{PAPER}/selection/{EXPERIMENTS.loc[w.experiment, 'group']}.json",
        predictions=lambda w: [
            f
            for n in TRAINED
            if EXPERIMENTS.loc[n, "group"] == EXPERIMENTS.loc[w.experiment, "group"]
            for f in fold_files(n, "predictions_test.json")
        ],
        metrics=lambda w: [
            f
            for n in TRAINED
            if EXPERIMENTS.loc[n, "group"] == EXPERIMENTS.loc[w.experiment, "group"]
            for f in fold_files(n, "metrics_test.json")
        ],
        splits=[
            f"{DATA}/splits/{CV_PARTITION.format(fold=f)}.csv" for f in range(CV_FOLDS)
        ],
    output:
        metrics=f"{run_dir(COMPOSITE_EXPERIMENT)}/metrics_test.json",
        predictions=f"{run_dir(COMPOSITE_EXPERIMENT)}/predictions_test.json",
    log:
        f"{run_dir()}/pool_selected.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/pool_folds.py"
