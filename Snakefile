# Regenerates the paper from raw data: data -> training -> evaluation -> report.
# `snakemake --cores N` runs the whole study of the active config (default: config/config.yaml).


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/paper.smk"


# Under a cluster executor (profiles/slurm) the data and report rules run on the submit host and
# only train and evaluate are submitted; ECHOMTL_SUBMIT_ALL=1 submits every rule (the SLURM proof).
if os.environ.get("ECHOMTL_SUBMIT_ALL") != "1":

    localrules:
        generate_synthetic,
        convert_export,
        split_records,
        audit_dataset,
        build_cache,
        aggregate_metrics,
        select_group,
        bootstrap_experiment,
        paired_bootstrap,
        table,
        figure,
        render_paper,
        compile_pdf,


onsuccess:
    if not LATEXMK:
        print(
            "results/paper/main.tex rendered; no PDF: latexmk is not installed. Install TeX with "
            "`apt-get install latexmk texlive-latex-recommended texlive-fonts-recommended "
            "texlive-latex-extra` and re-run to build results/paper/main.pdf."
        )


rule all:
    default_target: True
    input:
        all_outputs(),
