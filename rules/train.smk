# Training: one job per experiment and seed. Resume checkpoints live in the run's checkpoints/
# folder (not declared outputs), so a killed job re-run with --rerun-incomplete continues.


rule train:
    input:
        cache=lambda w: f"{R}/cache/{split_scheme(w.experiment)}/train-{IMGSZ}.npz",
    output:
        weights=f"{run_dir()}/weights.pt",
        steps=f"{run_dir()}/steps.csv",
        epochs=f"{run_dir()}/epochs.csv",
        diagnostics=f"{run_dir()}/diagnostics.csv",
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
        checkpoint_dir=lambda w: f"{run_dir(w.experiment, w.seed)}/checkpoints",
    script:
        "../workflow/scripts/train.py"
