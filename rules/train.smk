# Training: one job per experiment and seed, and per outer fold under cross-validation. Resume
# checkpoints live in the run's checkpoints/ folder (not declared outputs), so a killed job
# re-run with --rerun-incomplete continues.


rule train:
    input:
        cache=lambda w: f"{R}/cache/{split_scheme(w.experiment)}/train-{IMGSZ}.npz",
        match=matched_cache,
    output:
        weights=f"{run_dir(HOLDOUT_EXPERIMENT)}/weights.pt",
        steps=f"{run_dir(HOLDOUT_EXPERIMENT)}/steps.csv",
        epochs=f"{run_dir(HOLDOUT_EXPERIMENT)}/epochs.csv",
        diagnostics=f"{run_dir(HOLDOUT_EXPERIMENT)}/diagnostics.csv",
        # the weights at a few points, for the interference job (empty without a shared trunk)
        snapshots=f"{run_dir(HOLDOUT_EXPERIMENT)}/snapshots.pt",
    log:
        f"{run_dir()}/train.log",
    benchmark:
        f"{run_dir()}/train.benchmark.tsv"
    priority: train_priority
    conda:
        "../environment.yml"
    threads: config["train"]["threads"]
    resources:
        **config.get("resources", {}).get("train", {}),
    params:
        hp=train_params,
        device=config["train"]["device"],
        workers=config["train"]["workers"],
        checkpoint_dir=lambda w: f"{run_dir(w.experiment, w.seed)}/checkpoints",
    script:
        "../workflow/scripts/train.py"


use rule train as train_fold with:
    input:
        cache=lambda w: f"{R}/cache/{partition(w.experiment, w.fold)}/train-{IMGSZ}.npz",
        match=[],
    output:
        weights=f"{fold_dir(CV_TRAINED_EXPERIMENT)}/weights.pt",
        steps=f"{fold_dir(CV_TRAINED_EXPERIMENT)}/steps.csv",
        epochs=f"{fold_dir(CV_TRAINED_EXPERIMENT)}/epochs.csv",
        diagnostics=f"{fold_dir(CV_TRAINED_EXPERIMENT)}/diagnostics.csv",
        snapshots=f"{fold_dir(CV_TRAINED_EXPERIMENT)}/snapshots.pt",
    log:
        f"{fold_dir()}/train.log",
    benchmark:
        f"{fold_dir()}/train.benchmark.tsv"
    params:
        hp=train_params,
        device=config["train"]["device"],
        workers=config["train"]["workers"],
        checkpoint_dir=lambda w: f"{fold_dir(w.experiment, w.seed, w.fold)}/checkpoints",
