# Regenerates the paper from raw data: data -> training -> evaluation -> report.
# `snakemake --cores N` runs the whole study of the active config (default: config/config.yaml).


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
