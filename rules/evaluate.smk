# Evaluation of the final EMA weights on every evaluation split (valid, test) in one job per run:
# one model load and one process start instead of one per split. A split variant whose scheme
# lacks a split (the original split of an export without test) is evaluated on the splits it has
# by the same rule under another name (evaluate_available). Under cross-validation each fold's
# run is evaluated on its fold's validation and test parts (evaluate_fold), and the folds' test
# predictions are pooled (pool_folds): every image predicted once, by the model that never saw
# its patient. A grid group's configuration is chosen on validation (select_group), per fold
# under cv (pool_selected pools each fold's choice).


# The study's plan (echomtl.study) as the evaluation and report jobs read it.
rule plan_study:
    output:
        STUDY_JSON,
    log:
        f"{R}/logs/plan_study.log",
    conda:
        "../environment.yml"
    params:
        study=STUDY_MODEL.to_dict(),
    script:
        "../workflow/scripts/plan_study.py"


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
        selection=lambda w: composite_selection(w.experiment),
        predictions=lambda w: composite_files(
            w.experiment, w.seed, "predictions_test.json"
        ),
        metrics=lambda w: composite_files(w.experiment, w.seed, "metrics_test.json"),
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


checkpoint select_group:
    input:
        study=STUDY_JSON,
        metrics=selection_inputs,
    output:
        selection_file("{group}"),
    log:
        f"{R}/logs/select_group_{{group}}.log",
    wildcard_constraints:
        group=r"[^/]+",  # not a choice among groups (selection/choices/, select_choice)
    conda:
        "../environment.yml"
    params:
        score=config["report"]["selection_metric"],
    script:
        "../workflow/scripts/select_group.py"


# Validation choices among rows of different groups (echomtl.study.Study.choices): the
# detection-optimal fixed weight (best validation mAP@0.5 on the front) and GradNorm's alpha (the
# manual grid's score); per fold under cv, pooled by pool_selected as a grid group's choice is.
rule select_choice:
    input:
        study=STUDY_JSON,
        metrics=lambda w: validation_files(STUDY_MODEL.choices[w.choice]),
    output:
        choice_file("{choice}"),
    log:
        f"{R}/logs/select_choice_{{choice}}.log",
    wildcard_constraints:
        choice="|".join(STUDY_MODEL.choices) or "no-choice",
    conda:
        "../environment.yml"
    params:
        grid_score=config["report"]["selection_metric"],
    script:
        "../workflow/scripts/select_choice.py"


# Patient-level statistics of the test predictions (echomtl.evaluation.statistics): a bootstrap
# interval per experiment and a paired comparison of each with the reference.
rule bootstrap_experiment:
    input:
        lambda w: seed_files(w.experiment, "predictions_test.json"),
    output:
        json=f"{R}/stats/bootstrap/{{experiment}}.json",
        # every resample's values: the paired comparisons read them instead of re-scoring
        values=f"{R}/stats/bootstrap/{{experiment}}.values.npz",
    log:
        f"{R}/logs/stats/bootstrap_{{experiment}}.log",
    conda:
        "../environment.yml"
    params:
        n_resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../workflow/scripts/bootstrap_experiment.py"


rule paired_bootstrap:
    input:
        reference=seed_files(REFERENCE, "predictions_test.json"),
        other=lambda w: seed_files(w.experiment, "predictions_test.json"),
        reference_values=f"{R}/stats/bootstrap/{REFERENCE}.values.npz",
        other_values=f"{R}/stats/bootstrap/{{experiment}}.values.npz",
    output:
        f"{R}/stats/paired/{{experiment}}.json",
    log:
        f"{R}/logs/stats/paired_{{experiment}}.log",
    conda:
        "../environment.yml"
    params:
        reference=REFERENCE,
        n_resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../workflow/scripts/paired_bootstrap.py"


# The paper's first question: what sharing the trunk costs each task, and the fraction of that cost
# each shared-trunk method recovers (echomtl.evaluation.sharing), on the bootstrap's resamples.
rule sharing:
    input:
        study=STUDY_JSON,
        values=[f"{R}/stats/bootstrap/{n}.values.npz" for n in SHARING_RUNS],
        predictions=pooled_predictions(SHARING_RUNS),
        later_predictions=lambda w: pooled_predictions(SHARING_RUNS, later=True),
    output:
        f"{R}/stats/sharing.json",
    log:
        f"{R}/logs/stats/sharing.log",
    conda:
        "../environment.yml"
    params:
        runs=SHARING_RUNS,
        n_resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../workflow/scripts/sharing.py"


# Interference measured with power (echomtl.evaluation.interference): each task's gradient on the
# shared trunk accumulated over a fixed set of training images, at the weights the run saved when
# warm-up ended, at half of its schedule and at its end; its first seed (and fold).
rule interference:
    input:
        snapshots=lambda w: f"{record_dir(w.experiment, SEEDS[0])}/snapshots.pt",
        cache=lambda w: f"{R}/cache/{partitions(w.experiment)[0]}/train-{IMGSZ}.npz",
    output:
        f"{R}/stats/interference/{{experiment}}.json",
    log:
        f"{R}/logs/stats/interference_{{experiment}}.log",
    conda:
        "../environment.yml"
    threads: config["train"]["threads"]
    params:
        n_images=config["balancing"]["interference_images"],
        device=config["train"]["device"],
    script:
        "../workflow/scripts/interference.py"


# Every run's measurements in one table (echomtl.evaluation.tidy), which the report reads.
rule aggregate_metrics:
    input:
        study=STUDY_JSON,
        metrics=all_metrics(),
        later_metrics=lambda w: all_metrics(later=True),
        steps=all_runs("{run}/steps.csv"),
        benchmarks=all_runs("{run}/train.benchmark.tsv"),
        epochs=all_runs("{run}/epochs.csv"),
    output:
        TIDY,
    log:
        f"{R}/logs/aggregate_metrics.log",
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/aggregate_metrics.py"
