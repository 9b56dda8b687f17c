# Data stage: raw export -> records (+ defects) -> split -> audit -> model-input cache.


rule generate_synthetic:
    output:
        directory(f"{R}/raw/synthetic"),
    log:
        f"{R}/logs/generate_synthetic.log",
    benchmark:
        f"{R}/benchmarks/generate_synthetic.tsv"
    conda:
        "../environment.yml"
    # the images render in parallel (nothing else can run before them); capped at --cores
    threads: 4
    params:
        synthetic=config["synthetic"],
        class_names=config["data"]["class_names"],
        view_names=config["data"]["view_names"],
    script:
        "../workflow/scripts/generate_synthetic.py"


# An export from outside the workflow is tracked by its fingerprint (a parameter), not by its
# folder's time stamp, which says when it was copied (echomtl.data.export_reader.export_fingerprint).
rule convert_export:
    input:
        export_dir() if SYNTHETIC else ancient(export_dir()),
    output:
        records=f"{DATA}/records.csv",
        defects=f"{DATA}/defects.csv",
    log:
        f"{R}/logs/convert_export.log",
    benchmark:
        f"{R}/benchmarks/convert_export.tsv"
    conda:
        "../environment.yml"
    params:
        class_names=config["data"]["class_names"],
        view_names=config["data"]["view_names"],
        on_defect=config["data"]["on_defect"],
        all_boxes_defective=config["data"]["all_boxes_defective"],
        coord_tolerance=config["data"]["coord_tolerance"],
        export=None if SYNTHETIC else export_fingerprint(export_dir()),
    script:
        "../workflow/scripts/convert_export.py"


rule split_records:
    input:
        f"{DATA}/records.csv",
    output:
        f"{DATA}/splits/{{scheme}}.csv",
    log:
        f"{R}/logs/split_records_{{scheme}}.log",
    conda:
        "../environment.yml"
    params:
        fractions=config["data"]["grouped_fractions"],
        seed=config["data"]["split_seed"],
        min_patients=config["data"]["min_patients"],
        cv_folds=CV_FOLDS,
        cv_valid_fraction=config["data"]["cv_valid_fraction"],
    script:
        "../workflow/scripts/split_records.py"


rule audit_dataset:
    input:
        # "original" audits the export's own splits as they are (even without a test split).
        records=lambda w: (
            f"{DATA}/records.csv"
            if w.scheme == "original"
            else f"{DATA}/splits/{w.scheme}.csv"
        ),
        defects=f"{DATA}/defects.csv",
    output:
        json=f"{DATA}/audit/{{scheme}}/audit.json",
        counts=f"{DATA}/audit/{{scheme}}/counts.csv",
        leakage=f"{DATA}/audit/{{scheme}}/leakage.csv",
        box_sizes=f"{DATA}/audit/{{scheme}}/box_sizes.csv",
        image_sizes=f"{DATA}/audit/{{scheme}}/image_sizes.csv",
        duplicates=f"{DATA}/audit/{{scheme}}/duplicates.csv",
    log:
        f"{R}/logs/audit_dataset_{{scheme}}.log",
    conda:
        "../environment.yml"
    params:
        class_names=config["data"]["class_names"],
        view_names=config["data"]["view_names"],
    script:
        "../workflow/scripts/audit_dataset.py"


rule build_cache:
    input:
        f"{DATA}/splits/{{scheme}}.csv",
    output:
        f"{R}/cache/{{scheme}}/{{split}}-{{imgsz}}.npz",
    log:
        f"{R}/logs/build_cache_{{scheme}}_{{split}}_{{imgsz}}.log",
    benchmark:
        f"{R}/benchmarks/build_cache_{{scheme}}_{{split}}_{{imgsz}}.tsv"
    # before every training (priorities do not reach a job's inputs): a cache built last holds
    # its training back to the end, where it runs alone on one core (50 s of the default study)
    priority: 100
    conda:
        "../environment.yml"
    script:
        "../workflow/scripts/build_cache.py"
