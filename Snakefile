# Regenerates the paper from raw data: data -> training -> evaluation -> report.
# `snakemake --cores N` runs the whole study of the active config (default: config/config.yaml).


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
